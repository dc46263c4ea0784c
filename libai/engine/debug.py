"""A debug run that proves a model learns, as slp's `--debug`: a fast dev run, then an
overfit run on a few batches with a verdict.

    python tools/train_net.py --config-file CONFIG --debug

1. **Fast dev run**: `DEV_ITERS` iterations and one evaluation, in a temporary directory
   that is deleted afterwards (nothing is kept): every part of the run executes once.
2. **Overfit run**: `train.overfit_batches` batches (1 if unset) trained over and over for
   `OVERFIT_ITERS` iterations. A model whose gradients flow drives the loss on data it
   sees again and again towards zero; the verdict says whether the last loss fell to
   `TARGET_FRACTION` of the first, and names every parameter that received no gradient.
"""
from __future__ import annotations

import copy
import itertools
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

logger = logging.getLogger(__name__)

__all__ = ["OverfitBatches", "DebugVerdict", "run_debug", "DEV_ITERS", "OVERFIT_ITERS", "TARGET_FRACTION"]

DEV_ITERS = 5
OVERFIT_ITERS = 100
TARGET_FRACTION = 0.1


class OverfitBatches:
    """The first `num_batches` batches of `loader`, repeated forever (`train.overfit_batches`).

    Other attributes (`dataset`, `batch_sampler`, ...) are the loader's, so the trainer
    treats it as the loader it wraps.
    """

    def __init__(self, loader: Any, num_batches: int) -> None:
        if not (isinstance(num_batches, int) and num_batches >= 1):
            raise ValueError(f"train.overfit_batches must be an integer >= 1 (0 = off), got {num_batches!r}")
        self.loader = loader
        self.num_batches = num_batches
        self._batches = None

    def __iter__(self) -> Iterator[Any]:
        if self._batches is None:
            self._batches = list(itertools.islice(iter(self.loader), self.num_batches))
        return itertools.cycle(self._batches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


@dataclass
class DebugVerdict:
    """What the overfit run showed."""

    first_loss: float
    last_loss: float
    no_gradient: list = field(default_factory=list)

    @property
    def learns(self) -> bool:
        """The loss fell to `TARGET_FRACTION` of its first value."""
        return self.last_loss <= TARGET_FRACTION * self.first_loss

    def lines(self) -> list:
        """The verdict as the lines the tool prints."""
        ratio = self.last_loss / self.first_loss if self.first_loss else float("nan")
        verdict = "PASS" if self.learns and not self.no_gradient else "FAIL"
        lines = [
            f"debug verdict: {verdict}: the overfit loss went from {self.first_loss:.4g} to {self.last_loss:.4g} "
            f"({ratio:.3g} of the first; a model that learns reaches {TARGET_FRACTION})"
        ]
        if self.no_gradient:
            lines.append(f"parameters that received no gradient: {', '.join(self.no_gradient)}")
        else:
            lines.append("every parameter received a gradient")
        return lines


def _gradient_recorder(model: torch.nn.Module) -> tuple[set, list]:
    """Names of parameters that get a non-zero gradient, recorded during backward."""
    received: set = set()
    handles = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue

        def record(p: torch.Tensor, name: str = name) -> None:
            if p.grad is not None and bool(p.grad.ne(0).any()):
                received.add(name)

        handles.append(param.register_post_accumulate_grad_hook(record))
    return received, handles


def _debug_cfg(cfg: Any, iters: int, output_dir: str) -> Any:
    run = copy.deepcopy(cfg)
    run.train.train_epoch = 0
    run.train.train_iter = iters
    run.train.output_dir = output_dir
    run.train.resume = False
    run.train.checkpointer.period = iters
    run.train.log_period = 1
    if "wandb" in run.train:
        # Nothing is kept: no W&B run either (an online one would be uploaded).
        run.train.wandb.enabled = False
    return run


def run_debug(cfg: Any, trainer_cls: Any = None) -> DebugVerdict:
    """Run the fast dev run and the overfit run of `cfg` (set up by `default_setup`);
    return the verdict, also printed on rank 0."""
    from libai.engine.default import DefaultTrainer
    from libai.utils import distributed as dist

    trainer_cls = trainer_cls or DefaultTrainer
    scratch = tempfile.mkdtemp(prefix="libai-debug-")
    try:
        dev = _debug_cfg(cfg, DEV_ITERS, f"{scratch}/dev")
        dev.train.evaluation.eval_period = DEV_ITERS
        logger.info("Debug 1/2: fast dev run, %d iterations and one evaluation (nothing kept)", DEV_ITERS)
        trainer_cls(dev).train()

        overfit = _debug_cfg(cfg, OVERFIT_ITERS, f"{scratch}/overfit")
        overfit.train.overfit_batches = int(cfg.train.get("overfit_batches") or 1)
        overfit.train.evaluation.enabled = False
        logger.info("Debug 2/2: overfit run on %d batch(es) for %d iterations", overfit.train.overfit_batches, OVERFIT_ITERS)
        trainer = trainer_cls(overfit)
        received, handles = _gradient_recorder(trainer.model)
        trainer.train()
        for handle in handles:
            handle.remove()
    finally:
        if dist.is_main_process():
            shutil.rmtree(scratch, ignore_errors=True)
    losses = [value for value, _ in trainer.storage.history("total_loss").values()]
    names = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    verdict = DebugVerdict(losses[0], losses[-1], [name for name in names if name not in received])
    if dist.is_main_process():
        for line in verdict.lines():
            print(line, flush=True)
    return verdict
