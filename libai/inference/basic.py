"""`BasePipeline`: a trained (or Hugging Face) model from a LiBai config, under any layout,
called as `pipeline(inputs, **kwargs)` -> preprocess / forward / postprocess."""
from __future__ import annotations

import logging
import os
from typing import Any, Optional, Union

import torch
from omegaconf import DictConfig
from torch import nn

from libai.config import LazyConfig, try_get_key
from libai.config.instantiate import locate
from libai.utils import distributed as dist
from libai.utils.checkpoint import METADATA_FILE, Checkpointer

logger = logging.getLogger(__name__)

MODES = ("libai", "huggingface", "random")


class PipelineError(ValueError):
    """A pipeline argument, model path or input that cannot work; the message names the fix."""


class BasePipeline:
    """Build `cfg.model` (and `cfg.tokenization`) from a LiBai config, load its weights, and
    run it under the requested layout (LiBai's `BasePipeline`).

    Subclasses implement `_parse_parameters(**kwargs) -> (preprocess, forward, postprocess
    keyword dicts)`, `preprocess(inputs, **p)`, `forward(model_inputs, **f)` and
    `postprocess(model_outputs, **q)`. Every rank must make the same calls; results reach
    every rank (pipeline stages share the last stage's outputs).

    Args:
        config_file: a LiBai config (`.py`, or the `config.yaml` a run wrote), or a loaded
            config. None: the `config.yaml` next to `model_path` (`output/x/model_final` ->
            `output/x/config.yaml`).
        data_parallel, tensor_parallel, pipeline_parallel: the layout (None: the config's;
            data parallelism is inferred from the number of processes).
        pipeline_stage_id: a stage per layer (`train.dist.custom_pipeline_stage_id`).
        pipeline_num_layers: the model's number of layers for the stage map (default: the
            config's, else `model.cfg.hidden_layers`).
        model_path: `"libai"`: a checkpoint directory this project wrote (e.g.
            `output/x/model_final`); `"huggingface"`: a Hugging Face folder (`config.json` +
            `model.safetensors`); unused with `"random"` (random initial weights).
        mode: "libai", "huggingface" or "random".
        device: "cpu", "cuda" or "auto" (default: the config's `train.device`).
        kwargs: default call parameters (see the subclass), overridable per call.

    Loading never writes: a checkpoint directory is read only.
    """

    def __init__(
        self,
        config_file: Union[str, os.PathLike, DictConfig, None],
        data_parallel: Optional[int] = None,
        tensor_parallel: Optional[int] = None,
        pipeline_parallel: Optional[int] = None,
        pipeline_stage_id: Optional[list] = None,
        pipeline_num_layers: Optional[int] = None,
        model_path: Optional[Union[str, os.PathLike]] = None,
        mode: str = "libai",
        device: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise PipelineError(f"mode={mode!r} is not one of {MODES}: choose how the weights are loaded")
        self.mode = mode
        self.model_path = _check_model_path(model_path, mode)
        self.cfg = _load_config(config_file, self.model_path)
        _set_layout(self.cfg, data_parallel, tensor_parallel, pipeline_parallel, pipeline_stage_id, pipeline_num_layers)
        device = device or try_get_key(self.cfg, "train.device", default="auto")
        dist.setup_dist_util(self.cfg.train.dist, device=device)
        # The same seed on every rank: a "random" model equals the one-process one.
        torch.manual_seed(int(try_get_key(self.cfg, "train.seed", default=0)))
        self.tokenizer = self.build_tokenizer(self.cfg)
        self.model = self.load_pretrain_weight(self.cfg.model, self.model_path, mode)
        self.model.eval()
        self.engine = self._build_pipeline_stages()
        if mode == "libai":
            # After the stages are built: each rank reads only its own stage's shards.
            Checkpointer(self.model).load(self.model_path, checkpointables=[])
        self._default_params = kwargs
        self._parse_parameters(**kwargs)  # unknown keyword arguments fail here, not at the first call

    # ---- building --------------------------------------------------------------------

    @classmethod
    def build_tokenizer(cls, cfg) -> Any:
        """The config's tokenizer (vocabulary padded as in training), or None."""
        from libai.engine.default import DefaultTrainer

        return DefaultTrainer.build_tokenizer(cfg)

    def load_pretrain_weight(self, model_cfg, model_path: Optional[str], mode: str) -> nn.Module:
        """The model of `model_cfg`: random or (mode "huggingface") loaded from `model_path`;
        a "libai" checkpoint is read after the pipeline stages exist (see `__init__`)."""
        from libai.engine.default import DefaultTrainer, check_vocab_size

        if mode == "huggingface":
            model = _load_huggingface(model_cfg, model_path).to(dist.get_device())
        else:
            model = DefaultTrainer.build_model(self.cfg)
        check_vocab_size(model, self.tokenizer)
        return model

    def _build_pipeline_stages(self):
        if dist.get_pipeline_parallel_size() == 1:
            return None
        from libai.engine.pipeline import build_pipeline

        return build_pipeline(self.model, num_microbatches=1, schedule_name="GPipe")

    # ---- running ---------------------------------------------------------------------

    @torch.no_grad()
    def model_forward(self, inputs: dict, keys: Optional[tuple] = None) -> dict:
        """The model's output dict for keyword `inputs`, through the pipeline stages when
        there are several (every rank gets the last stage's values of those of `keys` the
        output has, default all)."""
        inputs = {k: v.to(dist.get_device()) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if self.engine is not None:
            return self.engine.eval_forward(inputs, keys=keys)
        output = self.model(**inputs)
        return output if keys is None else {k: output[k] for k in keys if k in output}

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """preprocess -> forward -> postprocess, with the constructor's parameters updated by `kwargs`."""
        preprocess_params, forward_params, postprocess_params = self._parse_parameters(
            **{**self._default_params, **kwargs}
        )
        model_inputs = self.preprocess(inputs, **preprocess_params)
        model_outputs = self.forward(model_inputs, **forward_params)
        return self.postprocess(model_outputs, **postprocess_params)

    def _parse_parameters(self, **pipeline_parameters: Any) -> tuple[dict, dict, dict]:
        """Split call parameters into (preprocess, forward, postprocess) keyword dicts."""
        raise NotImplementedError

    def preprocess(self, inputs: Any, **params: Any) -> dict:
        """Raw inputs -> the model's keyword inputs."""
        raise NotImplementedError

    def forward(self, model_inputs: dict, **params: Any) -> dict:
        """Run the model (see `model_forward`)."""
        raise NotImplementedError

    def postprocess(self, model_outputs: dict, **params: Any) -> Any:
        """The model's outputs -> what the caller gets."""
        raise NotImplementedError


def reject_unknown(pipeline: str, unknown: dict) -> None:
    """A pipeline parameter nobody reads is an error, not a silent no-op."""
    if unknown:
        raise PipelineError(f"{pipeline} got unknown parameter(s) {sorted(unknown)}: check their names")


# --------------------------------------------------------------------------------------
# Config, layout and model paths
# --------------------------------------------------------------------------------------


def _check_model_path(model_path, mode: str) -> Optional[str]:
    if mode == "random":
        if model_path is not None:
            raise PipelineError("mode='random' builds random weights: drop model_path or use mode='libai'/'huggingface'")
        return None
    if model_path is None:
        raise PipelineError(f"mode={mode!r} needs model_path (or use mode='random' for random weights)")
    path = os.fspath(model_path)
    if mode == "libai" and not os.path.isfile(os.path.join(path, METADATA_FILE)):
        hint = (
            "it is a Hugging Face folder: use mode='huggingface'"
            if _is_huggingface_dir(path)
            else "give a checkpoint directory a run wrote, e.g. output/x/model_final"
        )
        raise PipelineError(f"model_path {path} is not a LiBai checkpoint (no {METADATA_FILE} inside): {hint}")
    if mode == "huggingface" and os.path.isfile(os.path.join(path, METADATA_FILE)):
        # Any other folder is judged by the loader (read_checkpoint), which names what is missing.
        raise PipelineError(
            f"model_path {path} is not a Hugging Face folder but a checkpoint this project wrote: use mode='libai'"
        )
    return path


def _is_huggingface_dir(path: str) -> bool:
    from libai.models.utils.model_loader.base_loader import CONFIG_NAME, WEIGHTS_NAME

    return all(os.path.isfile(os.path.join(path, name)) for name in (CONFIG_NAME, WEIGHTS_NAME))


def _load_config(config_file, model_path: Optional[str]) -> DictConfig:
    if isinstance(config_file, DictConfig):
        return config_file.copy()
    if config_file is None:
        if model_path is None:
            raise PipelineError("config_file is None and there is no model_path to find config.yaml next to")
        config_file = os.path.join(os.path.dirname(os.path.normpath(model_path)), "config.yaml")
    if not os.path.isfile(config_file):
        raise PipelineError(f"config file {config_file} does not exist: give the training config or its config.yaml")
    return LazyConfig.load(os.fspath(config_file))


def _set_layout(cfg, data_parallel, tensor_parallel, pipeline_parallel, stage_ids, num_layers) -> None:
    """Write the requested layout into `cfg.train.dist` (None keeps the config's value)."""
    layout = cfg.train.dist
    # A run's config.yaml records the data-parallel size of its training: infer it anew.
    layout.data_parallel_size = data_parallel
    if tensor_parallel is not None:
        layout.tensor_parallel_size = tensor_parallel
    if pipeline_parallel is not None:
        layout.pipeline_parallel_size = pipeline_parallel
    if stage_ids is not None:
        layout.custom_pipeline_stage_id = list(stage_ids)
    if num_layers is not None:
        layout.pipeline_num_layers = num_layers
    if layout.get("pipeline_parallel_size", 1) > 1 and layout.get("pipeline_num_layers") is None:
        layout.pipeline_num_layers = try_get_key(cfg, "model.cfg.hidden_layers", default=None)


def _load_huggingface(model_cfg, model_path: str) -> nn.Module:
    """`model_cfg`'s class loaded from a Hugging Face folder by the matching converter."""
    from libai.models.utils.model_loader import load_huggingface_bert, load_huggingface_gpt2

    target = model_cfg.get("_target_")
    model_class = locate(target) if isinstance(target, str) else target
    name = getattr(model_class, "__name__", str(target))
    loaders = {"GPT": load_huggingface_gpt2, "Bert": load_huggingface_bert}
    loader = next((fn for prefix, fn in loaders.items() if name.startswith(prefix)), None)
    if loader is None:
        raise PipelineError(
            f"mode='huggingface' loads GPT-2 and BERT models, not {name}: use mode='libai' with a checkpoint"
        )
    libai_cfg = model_cfg.get("cfg")
    return loader(model_path, model_class, libai_cfg=dict(libai_cfg) if libai_cfg is not None else None)

