"""`DefaultTrainer` and the setup around it, following LiBai's `engine/default.py` flow.

A tool (see `tools/train_net.py`) does:
    args = default_argument_parser().parse_args()
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    DefaultTrainer(cfg).train()
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import os
import random
import sys
import time
import weakref
from collections import OrderedDict
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from omegaconf import DictConfig, ListConfig

from libai.config import LazyConfig, instantiate, try_get_key
from libai.models.build import build_graph, build_model
from libai.config.checks import TRAINER_GROUPS, check_train_config
from libai.data.errors import DataError
from libai.config.instantiate import locate
from libai.data.structures import Instance
from libai.engine import hooks
from libai.engine.debug import OverfitBatches
from libai.engine.pipeline import build_pipeline
from libai.engine.trainer import EagerTrainer, PipelineTrainer, TrainerBase, default_batch_fn
from libai.evaluation import inference_on_dataset
from libai.layers import enable_activation_checkpointing
from libai.models.utils.graph_base import CompiledOrEager
from libai.optim import build_optimizer
from libai.utils import distributed as dist
from libai.utils.checkpoint import LAST_CHECKPOINT_FILE, Checkpointer
from libai.utils.events import CommonMetricPrinter, CurvesWriter, JSONWriter, TensorboardXWriter, WandbWriter
from libai.utils.logger import hold_log_records, log_ignored_arguments, release_log_records, setup_logger
from libai.utils.rng import RNGStates
from libai.utils.zero import apply_zero

logger = logging.getLogger(__name__)


class BatchSizeError(ValueError):
    """`train_micro_batch_size`, `global_batch_size` and `num_accumulation_steps` disagree."""


class VocabSizeError(ValueError):
    """The model's word embedding has fewer rows than the tokenizer has tokens."""


def check_vocab_size(model: nn.Module, tokenizer) -> None:
    """Raise `VocabSizeError` when a `VocabEmbedding` of `model` cannot embed every token id
    of `tokenizer` (ids past the table would crash, or embed as zeros under tensor parallelism)."""
    if tokenizer is None:
        return
    from libai.layers import VocabEmbedding

    needed = len(tokenizer)
    for name, module in model.named_modules():
        if isinstance(module, VocabEmbedding) and module.num_embeddings < needed:
            raise VocabSizeError(
                f"{name} has {module.num_embeddings} rows but the tokenizer has {needed} tokens: "
                f"raise the model's vocab_size (e.g. model.cfg.vocab_size) to at least {needed}"
            )


# --------------------------------------------------------------------------------------
# Command line and setup
# --------------------------------------------------------------------------------------


def default_setup(cfg, args) -> None:
    """Prepare a run: checks, process group and mesh, batch sizes, console log, seed.

    Checks the config (`check_train_config`: the groups a run needs, the types and ranges
    of `train`), applies `--resume` and `--fast-dev-run`, starts the process group and
    builds the mesh from `train.dist`, checks `global = micro x dp x accumulation` and
    seeds every rank with `train.seed` (the same seed everywhere, so the initial weights
    do not depend on the layout). Nothing is written to `train.output_dir` yet: the
    trainer calls `open_output_dir` once everything is built, so a run that fails on bad
    input leaves the directory as it was. Log lines until then are kept for `log.txt`.
    """
    eval_only = bool(getattr(args, "eval_only", False))
    check_train_config(cfg, groups=("train", "model", "dataloader") if eval_only else TRAINER_GROUPS)
    train = cfg.train
    train.resume = bool(getattr(args, "resume", False))
    if getattr(args, "fast_dev_run", False):
        train.train_epoch = 0
        train.train_iter = 20
        train.evaluation.eval_period = 10
        train.log_period = 1

    interleaved = try_get_key(cfg, "train.pipeline.schedule", default="1F1B") == "Interleaved1F1B"
    util = dist.setup_dist_util(
        train.dist,
        device=try_get_key(cfg, "train.device", default="auto"),
        # Interleaved 1F1B runs two virtual stages per pipeline rank (see libai.engine.pipeline).
        num_virtual_stages=2 if interleaved and train.dist.get("pipeline_parallel_size", 1) > 1 else 1,
    )
    _record_layout(cfg, util)
    resolve_batch_sizes(train, util.data_parallel_size)

    setup_logger(None, distributed_rank=dist.get_rank())
    hold_log_records()
    logger.info(
        "Rank %d of %d, layout dp=%d tp=%d pp=%d on %s",
        dist.get_rank(),
        dist.get_world_size(),
        util.data_parallel_size,
        util.tensor_parallel_size,
        util.pipeline_parallel_size,
        util.device_type,
    )
    if getattr(args, "config_file", ""):
        logger.info("Config file: %s", args.config_file)
    seed_all(int(train.seed))


def open_output_dir(cfg, keep_earlier: bool = True) -> None:
    """Start writing into `train.output_dir`: move an earlier run aside (`keep_earlier` and
    not resuming: `keep_earlier_run`), create the directory, log into `log.txt` (and
    `log.txt.rank{r}`, with the lines held since `default_setup`) and write `config.yaml`.

    Collective. The trainer calls it when everything a run needs has been built, so bad
    input never reaches the directory.
    """
    output_dir = cfg.train.output_dir
    kept = None
    if dist.is_main_process() and output_dir:
        if keep_earlier and not cfg.train.get("resume", False):
            kept = keep_earlier_run(output_dir)
        os.makedirs(output_dir, exist_ok=True)
    dist.synchronize()
    if output_dir:
        setup_logger(output_dir, distributed_rank=dist.get_rank())
    release_log_records()
    if kept:
        logger.warning(
            "train.output_dir %s held an earlier run's checkpoints: it is kept as %s and this run "
            "starts fresh (pass --resume to continue a run instead)", output_dir, kept
        )
    save_config(cfg)


def keep_earlier_run(output_dir: str) -> Optional[str]:
    """Move an earlier run's `output_dir` (one with checkpoints) aside, so a new run that
    is not `--resume`d never mixes its logs and checkpoints with it: it becomes
    `output_dir.<time of its last checkpoint>` and the new run starts in a fresh
    `output_dir`. Returns where it went, or None when there was nothing to keep."""
    marker = os.path.join(output_dir, LAST_CHECKPOINT_FILE)
    if not os.path.isfile(marker):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(os.path.getmtime(marker)))
    kept, n = f"{os.path.normpath(output_dir)}.{stamp}", 1
    while os.path.exists(kept):
        n += 1
        kept = f"{os.path.normpath(output_dir)}.{stamp}-{n}"
    os.rename(output_dir, kept)
    return kept


def _record_layout(cfg, util) -> None:
    """Write the layout derived at run time into the config (it goes to config.yaml)."""
    nodes = int(os.environ.get("NNODES", os.environ.get("GROUP_WORLD_SIZE", 1)) or 1)
    world = dist.get_world_size()
    cfg.train.dist.data_parallel_size = util.data_parallel_size
    cfg.train.dist.num_nodes = nodes
    cfg.train.dist.num_gpus_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world // nodes))
    cfg.train.dist.pipeline_stage_ids = list(util.layer_stage_ids)


def resolve_batch_sizes(train, data_parallel_size: int) -> None:
    """Fill in whichever of micro batch, global batch and accumulation steps is missing.

    `global_batch_size = train_micro_batch_size x data_parallel_size x
    num_accumulation_steps`; any two determine the third, and an inconsistent triple is a
    `BatchSizeError` that says which values would fit.
    """
    micro = train.get("train_micro_batch_size")
    global_ = train.get("global_batch_size")
    accum = train.get("num_accumulation_steps")
    dp = int(data_parallel_size)
    if micro is None and (global_ is None or accum is None):
        raise BatchSizeError(
            "train.train_micro_batch_size is None: set it, or set both train.global_batch_size "
            "and train.num_accumulation_steps"
        )
    if micro is None:
        micro, rest = divmod(int(global_), dp * int(accum))
        if rest or micro == 0:
            raise BatchSizeError(
                f"train.global_batch_size={global_} is not divisible by data_parallel_size={dp} x "
                f"num_accumulation_steps={accum}: change one of them"
            )
    elif global_ is None:
        accum = int(accum or 1)
        global_ = int(micro) * dp * accum
    elif accum is None:
        accum, rest = divmod(int(global_), int(micro) * dp)
        if rest or accum == 0:
            raise BatchSizeError(
                f"train.global_batch_size={global_} is not a multiple of train_micro_batch_size="
                f"{micro} x data_parallel_size={dp} = {int(micro) * dp}: set global_batch_size to a "
                f"multiple of {int(micro) * dp} or change train_micro_batch_size"
            )
    elif int(micro) * dp * int(accum) != int(global_):
        raise BatchSizeError(
            f"train.global_batch_size={global_} != train_micro_batch_size={micro} x "
            f"data_parallel_size={dp} x num_accumulation_steps={accum} = "
            f"{int(micro) * dp * int(accum)}: set only two of the three"
        )
    train.train_micro_batch_size = int(micro)
    train.global_batch_size = int(global_)
    train.num_accumulation_steps = int(accum)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def save_config(cfg) -> None:
    """Write the resolved config to `train.output_dir/config.yaml` (rank 0 only)."""
    output_dir = cfg.train.output_dir
    if dist.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        LazyConfig.save(cfg, path)
        logger.info("Full config saved to %s", path)


def auto_scale_hyperparams(cfg, data_loader) -> None:
    """Turn epochs and ratios into iterations, as LiBai does.

    `train_iter = max(ceil(len(dataset) * train_epoch / global_batch_size), train_iter)`,
    `warmup_iter = ceil(train_iter * warmup_ratio)`; `eval_after_n_epoch` and
    `checkpointer.save_model_after_n_epoch` become periods in iterations.
    """
    train = cfg.train
    gbs = train.global_batch_size
    dataset_len = len(data_loader.dataset)
    if dataset_len < gbs:
        raise DataError(
            f"the training set has {dataset_len} samples, fewer than one global batch ({gbs} = "
            f"train_micro_batch_size x data-parallel ranks x num_accumulation_steps): give more data "
            f"or lower train.global_batch_size"
        )
    iters_per_epoch = math.ceil(dataset_len / gbs)
    if train.train_epoch:
        train.train_iter = max(math.ceil(dataset_len * train.train_epoch / gbs), train.train_iter)
    train.warmup_iter = math.ceil(train.train_iter * train.warmup_ratio)
    train.samples = train.train_iter * gbs
    if try_get_key(cfg, "train.evaluation.eval_after_n_epoch"):
        train.evaluation.eval_period = iters_per_epoch * train.evaluation.eval_after_n_epoch
    if try_get_key(cfg, "train.checkpointer.save_model_after_n_epoch"):
        train.checkpointer.period = iters_per_epoch * train.checkpointer.save_model_after_n_epoch
    logger.info(
        "Auto-scaled: train_iter=%d warmup_iter=%d global_batch_size=%d (%d samples, %.2f epochs)",
        train.train_iter,
        train.warmup_iter,
        gbs,
        train.samples,
        train.samples / max(dataset_len, 1),
    )


def _autocast_setup(cfg) -> tuple[Optional[torch.dtype], Optional[torch.amp.GradScaler]]:
    """AMP from `train.amp`: (autocast dtype, grad scaler); bf16 on CPU, fp16 on CUDA by
    default (`train.amp.dtype` chooses); fp16 comes with a GradScaler."""
    if not try_get_key(cfg, "train.amp.enabled", default=False):
        return None, None
    device_type = dist.get_device().type
    name = try_get_key(cfg, "train.amp.dtype", default=None) or (
        "float16" if device_type == "cuda" else "bfloat16"
    )
    dtype = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}.get(name)
    if dtype is None:
        raise ValueError(f"train.amp.dtype={name!r} is not supported: use 'bfloat16' or 'float16'")
    if dtype == torch.float16 and device_type == "cpu":
        logger.warning("fp16 autocast on CPU is slow; consider train.amp.dtype='bfloat16'")
    # fp16's 5 exponent bits need loss scaling; bf16 has float32's range and does not.
    scaler = torch.amp.GradScaler(device_type) if dtype == torch.float16 else None
    return dtype, scaler


@contextlib.contextmanager
def _given_tokenizer(loader_cfg, tokenizer) -> Iterator[None]:
    """Set `tokenizer` on each dataset of a loader config while it is instantiated, as
    LiBai does, so NLP datasets (`GPT2Dataset(tokenizer=...)`) get the one the trainer
    built; removed afterwards so the saved config stays plain YAML."""
    given = []
    if tokenizer is not None and "dataset" in loader_cfg:
        datasets = loader_cfg.dataset
        for dataset in datasets if isinstance(datasets, (list, ListConfig)) else [datasets]:
            if isinstance(dataset, (dict, DictConfig)) and "tokenizer" in _signature_keys(dataset):
                had, old = "tokenizer" in dataset, dataset.get("tokenizer")
                dataset.tokenizer = tokenizer
                given.append((dataset, had, old))
    try:
        yield
    finally:
        for dataset, had, old in given:
            if had:
                dataset.tokenizer = old
            else:
                del dataset["tokenizer"]


def _signature_keys(lazy_cfg) -> set:
    """Argument names of a LazyCall config's target (empty when unknown)."""
    target = lazy_cfg.get("_target_")
    try:
        if isinstance(target, str):
            target = locate(target)
        return set(inspect.signature(target).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return set()  # instantiate will report a bad target itself


def _check_pipeline_config(cfg) -> None:
    """A pipeline setting that cannot run, as one clear error (graph mode, AMP and ZeRO
    all combine with every schedule)."""
    pp, accum = dist.get_pipeline_parallel_size(), cfg.train.num_accumulation_steps
    schedule = cfg.train.pipeline.schedule
    if schedule != "GPipe" and accum < pp:
        raise dist.DistLayoutError(
            f"the {schedule} schedule needs at least pipeline_parallel_size ({pp}) micro-batches "
            f"per step, got num_accumulation_steps={accum}: raise train.global_batch_size or use "
            f"train.pipeline.schedule='GPipe'"
        )


# --------------------------------------------------------------------------------------
# DefaultTrainer
# --------------------------------------------------------------------------------------


class DefaultTrainer(TrainerBase):
    """Build everything a LiBai config describes and train it.

    Builds, in this order: tokenizer, data loaders, model, optimizer, LR scheduler,
    checkpointer, the default hooks (IterationTimer, LRScheduler, PeriodicCheckpointer,
    EvalHook and BestCheckpointer when evaluation is on, PeriodicWriter on rank 0,
    PreemptionCheckpointer), then
    resumes (model, optimizer, scheduler, grad scaler, this trainer's and its hooks' state,
    every rank's random generator states, the data position) and builds the step: pipeline, graph (a compiled model) or eager. Every
    `build_*` classmethod can be overridden by a subclass.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        train = cfg.train
        self.freeze_heap = bool(try_get_key(cfg, "train.gc_freeze", default=True))
        self.tokenizer = self.build_tokenizer(cfg)
        self.train_loader, self.val_loader, test_split = self.build_train_loader(cfg, self.tokenizer)
        overfit_batches = try_get_key(cfg, "train.overfit_batches", default=0) or 0
        if overfit_batches:
            self.train_loader = OverfitBatches(self.train_loader, overfit_batches)
            logger.info("train.overfit_batches=%d: training on the first %d batches over and over", overfit_batches, overfit_batches)
        self.test_loader = self._evaluation_loaders(cfg, self.tokenizer, self.val_loader, test_split)
        auto_scale_hyperparams(cfg, self.train_loader)
        # config.yaml is this resolved config: building puts live objects into it (the
        # scheduler's optimizer), so the copy to write is taken now.
        resolved_cfg = copy.deepcopy(cfg)

        self.model = self.build_model(cfg)
        check_vocab_size(self.model, self.tokenizer)
        # ZeRO turns parameters into dp-sharded DTensors: the optimizer comes after it.
        grad_reducer = self._parallelize(cfg)
        self.optimizer = self.build_optimizer(cfg, self.model)
        self.lr_scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        self.autocast_dtype, self.grad_scaler = _autocast_setup(cfg)
        # Everything a step depends on, so that a resumed run continues bit for bit.
        self.checkpointer = Checkpointer(
            self.model,
            train.output_dir,
            trainer=weakref.proxy(self),
            optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler,
            grad_scaler=self.grad_scaler,
            rng_states=RNGStates(),
        )
        self.global_batch_size = train.global_batch_size
        self.max_iter = train.train_iter
        # Hooks first: resuming restores their state (the best metric, ...) too.
        self.register_hooks(self.build_hooks())
        self.resume_or_load(train.resume)
        open_output_dir(resolved_cfg)
        self._seek_train_data(self.start_iter * self.global_batch_size)
        self._trainer = self._build_step_trainer(cfg, grad_reducer)

    def _build_step_trainer(self, cfg, grad_reducer) -> EagerTrainer:
        """The trainer that runs one step: pipeline, graph (compiled model) or eager."""
        train_model, trainer_cls = self.model, EagerTrainer
        if self.pipeline is not None:
            train_model, trainer_cls = self.pipeline, PipelineTrainer
        elif try_get_key(cfg, "graph.enabled", default=False):
            train_model = self.build_graph(cfg, train_model, self.optimizer, self.lr_scheduler, is_train=True)
        device = cfg.train.input_placement_device
        mixup = getattr(self.train_loader, "mixup_func", None)
        return trainer_cls(
            train_model,
            self.train_loader,
            self.optimizer,
            grad_acc_steps=cfg.train.num_accumulation_steps,
            autocast_dtype=self.autocast_dtype,
            grad_scaler=self.grad_scaler,
            grad_reducer=grad_reducer,
            batch_fn=lambda data: self.get_batch(data, device, mixup),
        )

    def _parallelize(self, cfg):
        """Activation checkpointing, then ZeRO or the exact data-parallel reducer.

        Returns the gradient reducer the step uses (None when there is nothing to reduce).
        """
        self.pipeline = None
        if try_get_key(cfg, "train.activation_checkpoint.enabled", default=False):
            count = enable_activation_checkpointing(self.model)
            logger.info("Activation checkpointing on %d TransformerLayers", count)
            if count == 0:
                logger.warning("train.activation_checkpoint.enabled=True but the model has no TransformerLayer")
        accum = cfg.train.num_accumulation_steps
        exact = bool(try_get_key(cfg, "train.dist.exact_reduction", default=False))
        zero = cfg.train.zero_optimization
        shard = zero.enabled and dist.get_data_parallel_size() > 1
        if zero.enabled and not shard:
            logger.info("ZeRO is on but there is one data-parallel replica: nothing to shard")
        if dist.get_pipeline_parallel_size() > 1:
            _check_pipeline_config(cfg)
            self.pipeline = build_pipeline(self.model, accum, cfg.train.pipeline.schedule)
            logger.info(
                "Pipeline stage %d of %d runs %s (%s, %d micro-batches)",
                dist.get_pipeline_parallel_rank(),
                dist.get_pipeline_parallel_size(),
                self.pipeline.block_names(),
                cfg.train.pipeline.schedule,
                accum,
            )
            if try_get_key(cfg, "graph.enabled", default=False):
                self._compile_pipeline_blocks(cfg)
        if shard:
            logger.info("ZeRO stage %d over %d data-parallel ranks", zero.stage, dist.get_data_parallel_size())
            if self.pipeline is None:
                self.model, reducer = apply_zero(self.model, int(zero.stage), accum, reduce_dtype=_zero_reduce_dtype(exact))
                return reducer
            # The stage module is the FSDP root, so the pipeline schedule drives gradient
            # sync (reduce once after the last micro-batch); other stages' weights stay out.
            # With two virtual stages per rank the first one's module is the root of both
            # (the engine keeps the second from reducing early).
            stage_module = self.pipeline.stages[0].submod
            _, reducer = apply_zero(
                stage_module,
                int(zero.stage),
                accum,
                pipeline=True,
                ignored_params=set(self.pipeline.foreign_parameters()),
                reduce_dtype=_zero_reduce_dtype(exact),
            )
            self.pipeline.refresh_parameters()
            return reducer
        return dist.make_gradient_reducer(
            self.model,
            accum,
            exact=exact,
            bucket_cap_mb=float(try_get_key(cfg, "train.nccl_fusion_threshold_mb", default=25.0)),
            bucket_max_tensors=try_get_key(cfg, "train.nccl_fusion_max_ops", default=None),
            # A pipeline stage's backward calls do not map one to one onto micro-batches.
            overlap=self.pipeline is None,
        )

    def _compile_pipeline_blocks(self, cfg) -> None:
        """Graph mode under pipeline parallelism: compile each block this rank runs (the
        `train_graph`'s `compile_kwargs`), the glue between blocks stays eager."""
        compile_kwargs = dict(try_get_key(cfg, "graph.train_graph.compile_kwargs", default=None) or {})
        names = self.pipeline.compile_blocks(lambda fn: CompiledOrEager(fn, **compile_kwargs))
        logger.info("Graph mode: torch.compile of each of %d blocks on this stage", len(names))

    # ---- resume --------------------------------------------------------------------

    def resume_or_load(self, resume: bool = True) -> None:
        """With `resume`, restore everything from the last checkpoint; otherwise load
        `train.load_weight` (model weights only) if it is set."""
        extra = self.checkpointer.resume_or_load(self.cfg.train.load_weight, resume=resume)
        self.start_iter = int(extra["iteration"]) + 1 if resume and "iteration" in (extra or {}) else 0
        self.cfg.train.start_iter = self.start_iter

    def _seek_train_data(self, consumed_samples: int) -> None:
        """Move the train sampler to `consumed_samples`, where a resumed run continues.

        The loaders are built before the checkpoint is read (the LR schedule needs the
        dataset length), so the position is set here, before the first batch is drawn.
        """
        self.cfg.train.consumed_train_samples = consumed_samples
        sampler = self.train_loader.batch_sampler
        if hasattr(sampler, "consumed_samples"):
            sampler.consumed_samples = consumed_samples
        elif consumed_samples:
            logger.warning(
                "the train loader's sampler (%s) cannot seek; a resumed run restarts its data "
                "from the beginning", type(sampler).__name__
            )

    @property
    def consumed_train_samples(self) -> int:
        """Samples consumed when the current iteration has finished."""
        return (self.iter + 1) * self.global_batch_size

    # ---- the loop ------------------------------------------------------------------

    def train(self) -> None:
        """Train from `start_iter` to `train.train_iter`."""
        super().train(self.start_iter, self.max_iter)

    def run_step(self) -> None:
        """One optimizer step (delegated to the eager or graph trainer)."""
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def read_metrics(self) -> None:
        """Put the losses of the steps not read yet into the storage (see
        `EagerTrainer.read_metrics`): on logged, evaluated and checkpointed iterations."""
        self._trainer.read_metrics()

    @classmethod
    def get_batch(cls, data: Instance, input_placement_device: str = "cuda", mixup_func: Optional[Callable] = None) -> dict:
        """Turn an `Instance` of `DistTensorData` into the model's keyword arguments.

        Each field is this rank's part of the global batch, on this rank's device, keyed by
        its field name (the model's `forward` argument name); under pipeline parallelism a
        stage gets only the fields whose `placement_idx` names it (`default_batch_fn`).
        `input_placement_device` is accepted for LiBai compatibility: the device is this
        process's compute device.
        """
        if input_placement_device not in (None, dist.get_device().type):
            log_ignored_arguments(
                "DefaultTrainer.get_batch", "batches go to this process's compute device",
                input_placement_device=input_placement_device,
            )
        if mixup_func is not None:
            images, labels = mixup_func(data.get("images").tensor, data.get("labels").tensor)
            data.get("images").tensor = images
            data.get("labels").tensor = labels
        return default_batch_fn(data)

    # ---- hooks and writers -----------------------------------------------------------

    def build_hooks(self) -> list:
        """LiBai's default hooks, in LiBai's order, then the `PreemptionCheckpointer`."""
        cfg = self.cfg
        ret = [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            hooks.PeriodicCheckpointer(
                self.checkpointer,
                cfg.train.checkpointer.period,
                max_to_keep=cfg.train.checkpointer.max_to_keep,
                max_iter=self.max_iter,
            ),
        ]
        evaluation = cfg.train.evaluation
        if evaluation.enabled and self.test_loader:
            ret.append(hooks.EvalHook(evaluation.eval_period, self._evaluate))
            # The hooks that judge each evaluation: same period, checkpointer and metric.
            judged = dict(val_metric=evaluation.eval_metric, mode=evaluation.eval_mode)
            ret.append(hooks.BestCheckpointer(evaluation.eval_period, self.checkpointer, **judged))
            top_k = try_get_key(cfg, "train.checkpointer.save_top_k", default=0) or 0
            if top_k > 0:
                ret.append(hooks.TopKCheckpointer(evaluation.eval_period, self.checkpointer, k=top_k, **judged))
            stopping = try_get_key(cfg, "train.early_stopping", default=None)
            if stopping is not None and stopping.get("enabled", False):
                ret.append(
                    hooks.EarlyStopping(
                        evaluation.eval_period,
                        self.checkpointer,
                        patience=stopping.get("patience", 3),
                        min_delta=stopping.get("min_delta", 0.0),
                        **judged,
                    )
                )
        # On every rank (writers on rank 0 only): the ranks read their losses together.
        writers = self.build_writers() if dist.is_main_process() else []
        ret.append(hooks.PeriodicWriter(writers, cfg.train.log_period))
        # Last: the step's metrics are written before a preempted run stops.
        ret.append(hooks.PreemptionCheckpointer(self.checkpointer))
        return ret

    def build_writers(self) -> list:
        """Console line, `metrics.json`, TensorBoard events and `curves.png` in
        `train.output_dir`, and a Weights & Biases run when `train.wandb.enabled`.

        Override it to add a writer for another tracker (a `libai.utils.events.EventWriter`).
        """
        train = self.cfg.train
        output_dir = train.output_dir
        metrics_file = os.path.join(output_dir, "metrics.json")
        evaluation = train.evaluation
        eval_metric = evaluation.eval_metric if evaluation.enabled and self.test_loader else None
        # The console shows medians over 20 iterations; the files record each logged
        # iteration's exact values (window 1), so curves can be compared across runs.
        writers = [
            CommonMetricPrinter(self.global_batch_size, self.max_iter),
            JSONWriter(metrics_file, window_size=1),
            TensorboardXWriter(output_dir, window_size=1),
            # After the JSONWriter: it draws what that writer has just written.
            CurvesWriter(metrics_file, os.path.join(output_dir, "curves.png"), eval_metric),
        ]
        wandb_cfg = try_get_key(self.cfg, "train.wandb", default=None)
        if wandb_cfg is not None and wandb_cfg.get("enabled", False):
            writers.append(
                WandbWriter(
                    output_dir,
                    project=wandb_cfg.get("project"),
                    name=wandb_cfg.get("name"),
                    tags=list(wandb_cfg.get("tags") or ()),
                    mode=wandb_cfg.get("mode", "offline"),
                    config_file=os.path.join(output_dir, "config.yaml"),
                )
            )
        return writers

    def _evaluate(self) -> dict:
        if getattr(self, "_eval_model", None) is None:
            self._eval_model = self.build_eval_model(self.cfg, self.model, self.pipeline)
        return self.test(self.cfg, self.test_loader, self._eval_model)

    # ---- evaluation without training (tools/train_net.py --eval-only) -----------------

    @classmethod
    def build_eval_model(cls, cfg, model: nn.Module, pipeline=None) -> nn.Module:
        """What evaluation runs: the pipeline's forward-only model under pp > 1 (this rank's
        stage of `pipeline`, or of a new one), the eval graph in graph mode, else `model`."""
        if dist.get_pipeline_parallel_size() > 1:
            # Each rank keeps its stage; batches flow through the stages forward only.
            pipeline = pipeline or build_pipeline(model, num_microbatches=1, schedule_name="GPipe")
            return pipeline.eval_model()
        if try_get_key(cfg, "graph.enabled", default=False):
            return cls.build_graph(cfg, model, is_train=False)
        return model

    @classmethod
    def _evaluation_loaders(cls, cfg, tokenizer, val_loader, test_split) -> list:
        """The loaders evaluation runs on: the train loader's validation and test splits,
        then `dataloader.test`."""
        loaders = [loader for loader in (val_loader, test_split) if loader is not None]
        return loaders + cls.build_test_loader(cfg, tokenizer)

    @classmethod
    def evaluate_only(cls, cfg, resume: bool = False) -> dict:
        """Evaluate a trained model as training evaluates it: the same model dispatch
        (`build_eval_model`), the same loaders (validation split included), weights from
        the last checkpoint (`resume`) or `train.load_weight`."""
        tokenizer = cls.build_tokenizer(cfg)
        _, val_loader, test_split = cls.build_train_loader(cfg, tokenizer)
        loaders = cls._evaluation_loaders(cfg, tokenizer, val_loader, test_split)
        model = cls.build_model(cfg)
        check_vocab_size(model, tokenizer)
        Checkpointer(model, save_dir=cfg.train.output_dir).resume_or_load(cfg.train.load_weight, resume=resume)
        open_output_dir(cfg, keep_earlier=False)
        if not loaders:
            logger.info("No dataset to evaluate: set dataloader.test (or a validation split) in the config")
            return {}
        return cls.test(cfg, loaders, cls.build_eval_model(cfg, model))

    # ---- builders users override ---------------------------------------------------

    @classmethod
    def build_tokenizer(cls, cfg):
        """The tokenizer from `cfg.tokenization.tokenizer`, or None."""
        if try_get_key(cfg, "tokenization.tokenizer") is None:
            return None
        from libai.tokenizer import build_tokenizer  # NLP projects only

        return build_tokenizer(cfg.tokenization)

    @classmethod
    def build_model(cls, cfg) -> nn.Module:
        """Instantiate `cfg.model` on this rank's device (`libai.models.build_model`)."""
        return build_model(cfg.model)

    @classmethod
    def build_graph(cls, cfg, model, optimizer=None, lr_scheduler=None, is_train: bool = True) -> nn.Module:
        """Wrap `model` as `cfg.graph.train_graph` / `eval_graph` (`libai.models.build_graph`)."""
        return build_graph(cfg, model, optimizer, lr_scheduler, is_train)

    @classmethod
    def build_optimizer(cls, cfg, model: nn.Module) -> torch.optim.Optimizer:
        """`build_optimizer(cfg.optim, model)`."""
        return build_optimizer(cfg.optim, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer: torch.optim.Optimizer):
        """`cfg.train.scheduler` with the optimizer and the derived iteration counts."""
        scheduler_cfg = cfg.train.scheduler
        scheduler_cfg.optimizer = optimizer
        scheduler_cfg.max_iter = cfg.train.train_iter
        scheduler_cfg.warmup_iter = cfg.train.warmup_iter
        return instantiate(scheduler_cfg)

    @classmethod
    def build_train_loader(cls, cfg, tokenizer=None):
        """(train, valid, test) loaders from `cfg.dataloader.train`, resuming at
        `train.consumed_train_samples`."""
        loader_cfg = cfg.dataloader.train
        loader_cfg.train_batch_size = cfg.train.train_micro_batch_size
        loader_cfg.test_batch_size = cfg.train.test_micro_batch_size
        loader_cfg.seed = cfg.train.seed
        loader_cfg.consumed_samples = cfg.train.consumed_train_samples
        with _given_tokenizer(loader_cfg, tokenizer):
            loaders = instantiate(loader_cfg)
        if not isinstance(loaders, (tuple, list)):
            loaders = (loaders, None, None)
        return tuple(loaders) + (None,) * (3 - len(loaders))

    @classmethod
    def build_test_loader(cls, cfg, tokenizer=None) -> list:
        """The loaders of `cfg.dataloader.test` (a list; empty if none)."""
        test_cfgs = try_get_key(cfg, "dataloader.test", default=None) or []
        loaders = []
        for test_cfg in test_cfgs:
            test_cfg.test_batch_size = cfg.train.test_micro_batch_size
            with _given_tokenizer(test_cfg, tokenizer):
                loaders.append(instantiate(test_cfg))
        return loaders

    @classmethod
    def build_evaluator(cls, cfg):
        """A fresh evaluator from `cfg.train.evaluation.evaluator`."""
        return instantiate(cfg.train.evaluation.evaluator)

    @classmethod
    def test(cls, cfg, test_loaders, model, evaluator=None) -> dict:
        """Evaluate `model` on each test loader; results keyed by dataset name when several."""
        if not isinstance(test_loaders, (list, tuple)):
            test_loaders = [test_loaders]
        results = OrderedDict()
        for idx, loader in enumerate(test_loaders):
            name = getattr(loader.dataset, "dataset_name", None) or f"dataset_{idx}"
            data_evaluator = evaluator or cls.build_evaluator(cfg)
            results[name] = inference_on_dataset(
                model,
                loader,
                cfg.train.test_micro_batch_size,
                int(cfg.train.evaluation.eval_iter),
                cls.get_batch,
                cfg.train.input_placement_device,
                data_evaluator,
            )
            logger.info("Evaluation results for %s: %s", name, dict(results[name]))
        return next(iter(results.values())) if len(results) == 1 else results


# --------------------------------------------------------------------------------------
# Errors a user can cause end with one line, not a traceback
# --------------------------------------------------------------------------------------


def _user_error_types() -> tuple:
    from libai.config import ConfigFileError, ConfigKeyError, ConfigOverrideError, ConfigValueError
    from libai.config.instantiate import ConfigArgumentError, ConfigTargetError
    from libai.data.errors import DataError
    from libai.data.placement import PlacementError
    from libai.engine.trainer import NonFiniteLossError
    from libai.inference.basic import PipelineError
    from libai.inference.generation import GenerationError
    from libai.models.utils.model_loader import HuggingFaceCheckpointError
    from libai.utils.checkpoint import CheckpointError

    return (
        ConfigKeyError,
        ConfigOverrideError,
        ConfigFileError,
        ConfigValueError,
        ConfigTargetError,
        ConfigArgumentError,
        DataError,
        dist.DistLayoutError,
        BatchSizeError,
        VocabSizeError,
        CheckpointError,
        FileNotFoundError,
        PipelineError,
        GenerationError,
        HuggingFaceCheckpointError,
        PlacementError,
        NonFiniteLossError,
    )


def _zero_reduce_dtype(exact: bool) -> Optional[torch.dtype]:
    """ZeRO's reduce-scatter dtype: float64 for `train.dist.exact_reduction`, else the
    gradients' own (None), as FSDP2 does by default."""
    return torch.float64 if exact else None


def run_with_clear_errors(main: Callable, *args) -> None:
    """Call `main(*args)`; a user error (bad config key, layout, batch sizes, missing data,
    unreadable, corrupt or unwritable checkpoint, bad inference argument, a batch field on
    the wrong pipeline stage, a non-finite loss) prints one `error: ...` line and exits with
    status 2. A run preempted by a signal (`TrainingPreempted`) prints where it saved and
    exits with 128 + the signal number, as a process killed by it would.

    All ranks see the same config and files, so only rank 0 prints, except for errors that
    only the rank that meets them knows (`rank_local`, e.g. a `PlacementError` on one
    pipeline stage). A rank whose peer stopped that way loses its connection in the middle
    of a collective: it says so in one line instead of a traceback, and exits too.
    """
    rank = os.environ.get("RANK", "0")
    try:
        main(*args)
        # Leave gloo's/NCCL's threads no work to abort on at interpreter exit (a restarted
        # launch would otherwise see this rank fail after a finished run).
        dist.shutdown_process_groups()
    except _user_error_types() as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        if rank == "0" or getattr(err, "rank_local", False):
            print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    except hooks.TrainingPreempted as stop:
        if rank == "0":
            print(f"stopped: {stop}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except RuntimeError as err:
        if not _is_peer_failure(err):
            raise
        print(f"error: rank {rank} stopped because another rank failed (see its error)", file=sys.stderr, flush=True)
        sys.exit(2)


def _is_peer_failure(err: BaseException) -> bool:
    """Whether `err` is gloo's or NCCL's report of a peer process that went away."""
    text = str(err)
    return any(sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))
