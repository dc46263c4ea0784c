"""Graph mode: LiBai's `nn.Graph` becomes a `torch.compile`d model with an eager fallback."""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

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
        self.compile_kwargs = dict(compile_kwargs or {})
        # Kept outside the module tree so the model's parameters are registered once.
        object.__setattr__(self, "_run", CompiledOrEager(model, **self.compile_kwargs))

    def forward(self, **kwargs):
        """Call the compiled model; fall back to eager mode once if compiling fails."""
        self.model.train(self.is_train)
        return self._run(**kwargs)

    @property
    def _use_compiled(self) -> bool:
        # benchmarks/gpt_throughput.py reads this to report whether compiling worked.
        return self._run.use_compiled


class CompiledOrEager:
    """`fn` compiled by `torch.compile` (lazily, on the first call), or `fn` itself from the
    first call whose compilation fails on this backend (a warning names the reason).

    Graph mode wraps the whole model this way; under pipeline parallelism each block a
    stage runs is wrapped on its own (`PipelineEngine.compile_blocks`), as torchtitan
    compiles per block, because the glue between blocks replays eagerly on every stage.
    """

    def __init__(self, fn: Callable, **compile_kwargs: Any) -> None:
        self.fn = fn
        self.compiled = torch.compile(fn, **compile_kwargs)
        self.use_compiled = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run compiled; on a compile failure warn once and run eagerly from then on."""
        if self.use_compiled:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any backend failure means "run eagerly"
                if not _is_compile_failure(err):
                    raise
                logger.warning(
                    "graph mode: torch.compile failed on this backend (%s: %s); "
                    "running eagerly instead (set graph.enabled=False to silence this)",
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
                self.use_compiled = False
        return self.fn(*args, **kwargs)


def _is_compile_failure(err: Exception) -> bool:
    """Whether `err` came from dynamo/inductor rather than from the model's own code."""
    module = type(err).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor", "torch._subclasses")) or (
        "compile" in type(err).__name__.lower()
    )
