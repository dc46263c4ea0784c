"""Graph mode: LiBai's `nn.Graph` becomes a `torch.compile`d model with an eager fallback."""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn

logger = logging.getLogger(__name__)


class GraphBase(nn.Module):
    """Run `model` compiled by `torch.compile`, or eagerly where compiling fails.

    LiBai's config names it (`graph.train_graph = LazyCall(GraphBase)(is_train=True)`) and
    `DefaultTrainer.build_graph` fills in `model` and the training objects. The optimizer,
    scheduler, AMP and ZeRO settings are accepted for LiBai compatibility; PyTorch keeps
    them in the trainer, so only the forward (and, through AOTAutograd, its backward) is
    compiled. Compilation happens lazily on the first call; if the backend cannot compile
    on this machine, a warning names the reason and every later call runs eagerly.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        lr_scheduler: Any = None,
        fp16: bool = False,
        activation_checkpoint: bool = False,
        grad_acc_steps: int = 1,
        zero_optim: bool = False,
        zero_stage: int = 0,
        is_train: bool = True,
        auto_parallel_conf: Any = None,
        compile_kwargs: Optional[dict] = None,
    ):
        super().__init__()
        self.model = model
        self.is_train = is_train
        # Kept outside the module tree so the model's parameters are registered once.
        object.__setattr__(self, "_compiled", torch.compile(model, **(compile_kwargs or {})))
        self._use_compiled = True

    def forward(self, **kwargs):
        """Call the compiled model; fall back to eager mode once if compiling fails."""
        self.model.train(self.is_train)
        if self._use_compiled:
            try:
                return self._compiled(**kwargs)
            except Exception as err:  # noqa: BLE001 - any backend failure means "run eagerly"
                if not _is_compile_failure(err):
                    raise
                logger.warning(
                    "graph mode: torch.compile failed on this backend (%s: %s); "
                    "running eagerly instead (set graph.enabled=False to silence this)",
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
                self._use_compiled = False
        return self.model(**kwargs)


def _is_compile_failure(err: Exception) -> bool:
    """Whether `err` came from dynamo/inductor rather than from the model's own code."""
    module = type(err).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor", "torch._subclasses")) or (
        "compile" in type(err).__name__.lower()
    )
