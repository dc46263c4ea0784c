"""ZeRO over the data-parallel ranks, on PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`).

LiBai's `train.zero_optimization.stage` maps onto FSDP2 like this (DeepSpeed's meaning of the
stages: 1 shards optimizer states, 2 also gradients, 3 also parameters):

========  ========================  ===============================================================
stage     reshard_after_forward     gradient accumulation over the micro-batches of one step
========  ========================  ===============================================================
1         False                     no reduction until the last micro-batch (`no_sync`): the full
                                    gradients are summed in float64 on every rank, then one
                                    reduce-scatter; parameters stay gathered across micro-batches
2         False                     one reduce-scatter per micro-batch into a float64 sum of this
                                    rank's gradient shard; parameters stay gathered across micro-batches
3         True                      as stage 2, and parameters are freed after each forward and
                                    each backward (gathered again when needed)
========  ========================  ===============================================================

Stage 1 is FSDP2 with `reshard_after_forward=False`, a superset of optimizer-state-only
sharding, on purpose: between steps it keeps 1/dp of the parameters, gradients and
optimizer states (ZeRO-1 keeps all of the parameters and gradients), it sends the same
bytes per step as an all-reduce (one reduce-scatter plus one all-gather), and it reuses
FSDP2's sharded DTensor parameters, which the optimizers, `distributed.clip_grad_norm_` and
`torch.distributed.checkpoint` (cross-layout resharding) handle as they are. A hand-made
optimizer-state-only shard would need its own optimizer wrapper, its own all-gather of the
updated parameters and its own checkpoint format, for more memory and no less traffic.
What stage 1 keeps of "ZeRO-1" is its accumulation: full gradients are summed locally and
reduced once per step (fewest messages); stages 2/3 reduce every micro-batch so that only
gradient shards outlive a backward.

Exactness. `apply_zero`'s default, `reduce_dtype=torch.float64`, keeps the property of the
exact `GradientReducer`: gradients are reduced in float64
(`MixedPrecisionPolicy(reduce_dtype=float64)`), summed over micro-batches in float64,
divided once by `num_micro_batches x dp` (FSDP2's gradient divide factor) and rounded once
to the parameter dtype, so every data-parallel split takes the same step. The trainer asks for that
only with `train.dist.exact_reduction=True`; by default it passes `reduce_dtype=None` (the
gradients' own dtype, FSDP2's default: half the traffic, last-bit differences between
layouts).

Use, in the one place that builds the model and optimizer::

    model, reducer = apply_zero(model, stage, num_micro_batches)
    optimizer = build_optimizer(cfg.optim, model)          # AFTER apply_zero
    # EagerTrainer.run_step as it is: backward; reducer.accumulate() per micro-batch,
    # reducer.reduce() after the last, then distributed.clip_grad_norm_ and step.

After `apply_zero` the parameters are `DTensor`s sharded over "dp" (and over "tp" as they
were), so the optimizer must be built from `model.parameters()` after it.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from libai.utils import distributed as dist_util

logger = logging.getLogger(__name__)

__all__ = ["ZERO_STAGES", "ZeroGradientReducer", "apply_zero"]

ZERO_STAGES = (1, 2, 3)

# Module classes that get their own FSDP group by default (their parameters are gathered
# one layer at a time). Matched by class name anywhere in the MRO, so projects' own
# TransformerLayer subclasses count and libai.layers need not be imported here.
DEFAULT_WRAP_CLASS_NAMES = ("TransformerLayer", "LlamaDecoderLayer")


# --------------------------------------------------------------------------------------
# apply_zero
# --------------------------------------------------------------------------------------


def apply_zero(
    model: nn.Module,
    stage: int,
    num_micro_batches: int = 1,
    *,
    mesh: Optional[DeviceMesh] = None,
    wrap_classes: Sequence[Union[str, type]] = DEFAULT_WRAP_CLASS_NAMES,
    reduce_dtype: Optional[torch.dtype] = torch.float64,
    pipeline: bool = False,
    ignored_params: Optional[set] = None,
) -> tuple[nn.Module, Optional[Union["ZeroGradientReducer", dist_util.GradientReducer]]]:
    """Shard `model` over the data-parallel ranks (ZeRO `stage` 1, 2 or 3) in place.

    Returns `(model, reducer)`. `reducer` has `GradientReducer`'s interface
    (`accumulate()` after each micro-batch's backward, `reduce()` after the last) and leaves
    in `param.grad` this rank's shard of the mean gradient over all
    `num_micro_batches x dp` micro-batches (micro-batch losses are not divided by the
    number of micro-batches). Build the optimizer after this call.

    With one data-parallel rank there is nothing to shard: the model is returned as it is,
    with the usual `GradientReducer` (or None when a step has a single micro-batch).

    Args:
        model: the module (or, with pipeline parallelism, this rank's stage module); its
            parameters are plain tensors or DTensors on this stage's "tp" mesh.
        stage: 1, 2 or 3 (see the module docstring).
        num_micro_batches: micro-batches per optimizer step (gradient accumulation).
        mesh: the data-parallel mesh; default: the "dp" dimension of this rank's stage mesh.
        wrap_classes: submodule classes (or class names) sharded as their own FSDP groups,
            so that stage 3 gathers one of them at a time. A module whose parameters are
            also used outside its own `forward` (tied embeddings) must not be listed.
        reduce_dtype: dtype of gradient reduction and accumulation (float64: exact; None:
            the gradients' own, FSDP2's default, as the trainer uses unless
            `train.dist.exact_reduction`).
        pipeline: True when a `torch.distributed.pipelining` schedule drives backward: it
            already turns gradient sync off for all but the final reduction, so the reducer
            only divides; build the schedule with `scale_grads=False`.
        ignored_params: parameters left alone (not sharded, broadcast or wrapped): with
            pipeline parallelism, those of the other stages, freed on this rank.
    """
    if stage not in ZERO_STAGES:
        raise ValueError(f"train.zero_optimization.stage={stage!r} is not supported: use 1, 2 or 3")
    if int(num_micro_batches) < 1:
        raise ValueError(f"num_micro_batches must be >= 1, got {num_micro_batches}")
    num_micro_batches = int(num_micro_batches)
    if isinstance(model, FSDPModule):
        raise ValueError("apply_zero was already applied to this model: call it once")
    if mesh is None:
        if dist_util.get_data_parallel_size() == 1:
            logger.info("ZeRO stage %d asked for with one data-parallel rank: nothing to shard", stage)
            return model, dist_util.make_gradient_reducer(model, num_micro_batches, exact=reduce_dtype == torch.float64)
        mesh = dist_util.get_stage_placement(dist_util.get_pipeline_parallel_rank())["dp"]
    ignored = {id(p) for p in ignored_params or ()}
    params = [p for p in model.parameters() if id(p) not in ignored]
    _check_model(model, mesh, ignored)
    # Same start on every replica before the replicas become shards of one model.
    _broadcast_over(params + list(model.buffers()), mesh)

    shard_options = dict(
        mesh=mesh,
        reshard_after_forward=stage == 3,
        mp_policy=MixedPrecisionPolicy(reduce_dtype=reduce_dtype),
        ignored_params=set(ignored_params or ()),
    )
    for module in _modules_to_wrap(model, wrap_classes):
        # A submodule with an ignored parameter belongs to another pipeline stage.
        if not any(id(p) in ignored for p in module.parameters()):
            fully_shard(module, **shard_options)
    fully_shard(model, **shard_options)
    exact = reduce_dtype == torch.float64
    reducer = ZeroGradientReducer(model, stage, num_micro_batches, pipeline=pipeline, exact=exact)
    return model, reducer


def _check_model(model: nn.Module, mesh: DeviceMesh, ignored: set[int]) -> None:
    """Clear errors for models FSDP2 cannot shard over `mesh` (parameters whose id is in
    `ignored` are not checked)."""
    if mesh.ndim != 1:
        raise ValueError(f"apply_zero needs a 1-D data-parallel mesh, got {mesh.ndim}-D {mesh}")
    device_type = mesh.device_type
    for name, param in model.named_parameters():
        if id(param) in ignored:
            continue
        if param.device.type != device_type and param.device.type != "meta":
            raise ValueError(
                f"parameter {name} is on {param.device} but the data-parallel mesh is on "
                f"{device_type}: move the model to the training device before apply_zero"
            )
        # FSDP2 joins the "dp" mesh and a DTensor parameter's own mesh into one 2-D mesh,
        # which works when the parameter lives on the 1-D "tp" mesh of the same stage.
        if isinstance(param, DTensor) and param.device_mesh.ndim != 1:
            raise ValueError(
                f"parameter {name} is a DTensor on a {param.device_mesh.ndim}-D mesh; "
                f"apply_zero expects parameters on the 1-D 'tp' mesh of their stage"
            )


def _broadcast_over(tensors: list[torch.Tensor], mesh: DeviceMesh) -> None:
    """Copy the first data-parallel replica's `tensors` (parameters, buffers) to the others."""
    if mesh.size() == 1:
        return
    group = mesh.get_group()
    src = dist.get_global_rank(group, 0)
    with torch.no_grad():
        for tensor in tensors:
            local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
            dist.broadcast(local, src=src, group=group)


def _modules_to_wrap(model: nn.Module, wrap_classes: Sequence[Union[str, type]]) -> list[nn.Module]:
    """Submodules (not the root) whose class matches `wrap_classes`, outermost only, in
    post-order so that `fully_shard` runs bottom-up as FSDP2 requires."""
    names = {c for c in wrap_classes if isinstance(c, str)}
    types = tuple(c for c in wrap_classes if isinstance(c, type))

    def matches(module: nn.Module) -> bool:
        return isinstance(module, types) or any(cls.__name__ in names for cls in type(module).__mro__)

    chosen: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if matches(child):
                # A matching module is one group; nested matches would split it further
                # for no memory gain at this granularity.
                chosen.append(child)
            else:
                visit(child)

    visit(model)
    return chosen


# --------------------------------------------------------------------------------------
# The reducer the trainer calls
# --------------------------------------------------------------------------------------


class ZeroGradientReducer:
    """`GradientReducer`'s interface for a model sharded by `apply_zero`.

    FSDP2 reduce-scatters gradients inside backward; this object only tells it, per
    micro-batch, whether to reduce (and where to keep the running sum), so that after the
    last micro-batch `param.grad` holds this rank's shard of
    `sum(micro-batch gradients over all dp ranks) / (num_micro_batches x dp)`, summed in
    `reduce_dtype` and rounded once.

    Call `accumulate()` after each micro-batch's backward and `reduce()` after the last
    one (`reduce()` checks that there were exactly `num_micro_batches`). `exact` (a float64
    reduction) makes stages 2/3 keep a float64 sum of the gradient shards across
    micro-batches instead of FSDP2's float32 `.grad` accumulation.
    """

    def __init__(
        self, model: nn.Module, stage: int, num_micro_batches: int, pipeline: bool = False, exact: bool = True
    ) -> None:
        self.model = model
        self.stage = stage
        self.num_micro_batches = int(num_micro_batches)
        self.pipeline = pipeline
        self.fsdp_modules = [m for m in model.modules() if isinstance(m, FSDPModule)]
        self._count = 0
        # Per FSDP module: the float64 running sum of its flat reduce-scatter output over
        # the micro-batches before the last one (stages 2 and 3 only).
        self._partial: dict[int, Optional[torch.Tensor]] = {}
        self._stash_active = False
        mesh_size = _fsdp_mesh_size(self.fsdp_modules)
        # With a float64 reduction, stages 2/3 keep their own float64 sum of the gradient
        # shards across micro-batches (FSDP2 would add each micro-batch's rounded mean into
        # the float32 `.grad`); with a lower reduce dtype FSDP2's own accumulation is used.
        self._exact = exact
        for module in self.fsdp_modules:
            # One division by micro-batches x dp, applied by FSDP after the reduction.
            module.set_gradient_divide_factor(float(self.num_micro_batches * mesh_size))
            # gloo has neither AVG nor PREMUL_SUM; SUM + divide is also what fp64 uses.
            module.set_force_sum_reduction_for_comms(True)
            if self._exact and stage in (2, 3) and not pipeline and self.num_micro_batches > 1:
                module.set_all_reduce_hook(self._make_hook(id(module)))
        self._prepare(last=self.num_micro_batches == 1 or pipeline)

    # -- the trainer's interface ----------------------------------------------------------

    def accumulate(self) -> None:
        """Note that one micro-batch's backward is done; prepare the next one."""
        if self.pipeline:
            return
        self._count += 1
        if self._count > self.num_micro_batches:
            raise RuntimeError(
                f"ZeroGradientReducer.accumulate() called {self._count} times in one step but "
                f"num_micro_batches is {self.num_micro_batches}: call reduce() after the last one"
            )
        if self._count == self.num_micro_batches - 1:
            self._prepare(last=True)

    def reduce(self) -> None:
        """Finish the step: `param.grad` now holds this rank's shard of the mean gradient."""
        if self.pipeline:
            return
        if self._count != self.num_micro_batches:
            raise RuntimeError(
                f"ZeroGradientReducer.reduce() after {self._count} accumulate() calls, expected "
                f"{self.num_micro_batches} (one per micro-batch)"
            )
        self._count = 0
        self._partial.clear()
        self._prepare(last=self.num_micro_batches == 1)

    # -- internals -------------------------------------------------------------------------

    def _prepare(self, last: bool) -> None:
        """Set FSDP2's switches for the next backward (`last`: the step's final one)."""
        root = self.model
        if last:
            root.set_requires_gradient_sync(True)
            # Parameters must be sharded when the optimizer steps on the shards.
            root.set_reshard_after_backward(True)
            self._stash_active = False
            return
        # Stage 1 sums full gradients locally (no communication) until the last micro-batch;
        # stages 2/3 reduce-scatter every micro-batch and keep only shards (see the hook).
        root.set_requires_gradient_sync(self.stage != 1)
        # Stages 1/2 keep the gathered parameters until the step ends (no re-gather per
        # micro-batch); stage 3 frees them after every backward.
        root.set_reshard_after_backward(self.stage == 3)
        self._stash_active = self.stage != 1

    def _make_hook(self, key: int):
        """A hook on one FSDP group's reduce-scatter output (before the division and cast).

        Before the last micro-batch it moves the output into the float64 running sum and
        leaves zeros (so FSDP accumulates nothing into `.grad`); on the last it adds the
        running sum back, so FSDP divides and rounds the whole sum once.
        """

        def hook(reduce_output: torch.Tensor) -> None:
            partial = self._partial.get(key)
            if self._stash_active:
                if partial is None:
                    self._partial[key] = reduce_output.clone()
                else:
                    partial.add_(reduce_output)
                reduce_output.zero_()
            elif partial is not None:
                reduce_output.add_(partial)
                self._partial[key] = None

        return hook


def _fsdp_mesh_size(fsdp_modules: list) -> int:
    """Number of ranks gradients are reduced over (the FSDP shard mesh)."""
    for module in fsdp_modules:
        state = module._get_fsdp_state()
        for group in state._fsdp_param_groups:
            return group.mesh_info.shard_mesh_size
    return 1


# --------------------------------------------------------------------------------------
# Global gradient norm and clipping for any DTensor layout
# --------------------------------------------------------------------------------------
