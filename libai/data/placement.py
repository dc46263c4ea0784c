"""Which pipeline stage receives a batch field: LiBai's `placement_idx`, made real.

A `DistTensorData` names the stage that needs it: `placement_idx=0` the first, `-1` the
last, `k` stage k, and `ALL_STAGES` ("all") every stage (an attention mask that every
layer reads). Under pipeline parallelism a field goes only to the stage(s) it names; the
other stages get an `UnplacedField` instead, a tensor on the `meta` device (no memory, no
copy) with the field's shape and dtype. Glue code may read its metadata (`.shape`,
`.dtype`) and the pipeline may concatenate and split it into micro-batches, but computing
with it raises a `PlacementError` naming the field, the stage and the `placement_idx` to
set. (A plain `meta` tensor would not be safe: some CPU kernels accept one and return
uninitialised memory.)
"""
from __future__ import annotations

import operator
from typing import Any, Optional, Union

import torch

__all__ = ["ALL_STAGES", "PlacementError", "UnplacedField", "check_placement_idx", "stage_of", "is_placed_on"]

ALL_STAGES = "all"

PlacementIdx = Union[int, str]


class PlacementError(ValueError):
    """A batch field used on a pipeline stage it was not placed on, or a bad `placement_idx`."""

    # Met only by the stage that computes with the field (see `run_with_clear_errors`).
    rank_local = True


def check_placement_idx(placement_idx: Any) -> PlacementIdx:
    """`placement_idx` as an int or `ALL_STAGES`; anything else is a `PlacementError`."""
    if placement_idx == ALL_STAGES:
        return ALL_STAGES
    if not isinstance(placement_idx, bool):
        try:
            return operator.index(placement_idx)  # ints, numpy integers
        except TypeError:
            pass
    raise PlacementError(
        f"placement_idx={placement_idx!r} is not a pipeline stage: use 0 (the first stage), "
        f"-1 (the last), k (stage k) or {ALL_STAGES!r} (every stage)"
    )


def stage_of(placement_idx: PlacementIdx, num_stages: int) -> Union[int, str]:
    """The stage index (0 .. num_stages - 1) that `placement_idx` names, or `ALL_STAGES`."""
    if placement_idx == ALL_STAGES:
        return ALL_STAGES
    if not -num_stages <= placement_idx < num_stages:
        raise PlacementError(
            f"placement_idx={placement_idx} names no stage of a {num_stages}-stage pipeline: use a "
            f"value from {-num_stages} to {num_stages - 1}, or {ALL_STAGES!r}"
        )
    return placement_idx % num_stages


def is_placed_on(placement_idx: PlacementIdx, stage: int, num_stages: int) -> bool:
    """Whether a field with `placement_idx` goes to pipeline stage `stage`."""
    target = stage_of(placement_idx, num_stages)
    return target == ALL_STAGES or target == stage


class UnplacedField(torch.Tensor):
    """The stand-in of a batch field on a pipeline stage it was not placed on (see the
    module docstring): metadata and micro-batch splitting work, computing raises."""

    # Metadata reads, and the reshaping the trainer and the pipeline schedule do to
    # micro-batches (concatenate, split, detach); `to` and `requires_grad_` keep the
    # stand-in as it is.
    _METADATA = {"size", "dim", "numel", "__repr__", "__format__", "__get__", "is_floating_point"}
    _STRUCTURAL = {"cat", "tensor_split", "chunk", "split", "narrow", "contiguous", "detach"}
    _SELF = {"to", "requires_grad_"}

    @staticmethod
    def __new__(cls, name: str, like: torch.Tensor, placement_idx: PlacementIdx, stage: int, last_stage: int):
        meta = torch.empty(like.shape, dtype=like.dtype, device="meta")
        return cls._make(meta, name, placement_idx, stage, last_stage)

    @classmethod
    def _make(cls, meta: torch.Tensor, name: str, placement_idx: PlacementIdx, stage: int, last_stage: int):
        field = torch.Tensor._make_subclass(cls, meta)
        field._field_info = (name, placement_idx, stage, last_stage)
        return field

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # state is set in __new__
        super().__init__()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        source = _first_unplaced(args)
        if name in cls._SELF:
            return source
        # Clearing an attribute (`field.grad = None`, as the pipeline's backward does to
        # every input) computes nothing.
        clears = name == "__set__" and len(args) == 2 and args[1] is None
        if name in cls._METADATA or isinstance(func, type(torch.Tensor.shape)) or clears:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if name in cls._STRUCTURAL:
            with torch._C.DisableTorchFunctionSubclass():
                result = func(*args, **kwargs)
            return _rewrap(result, source._field_info)
        raise _placement_error(*source._field_info)

    def __repr__(self) -> str:
        name, placement_idx, stage, _ = self._field_info
        return f"UnplacedField({name!r}, shape={tuple(self.shape)}, placement_idx={placement_idx!r}, stage={stage})"


def _first_unplaced(values: Any) -> Optional["UnplacedField"]:
    for value in values:
        if isinstance(value, UnplacedField):
            return value
        if isinstance(value, (list, tuple)):
            found = _first_unplaced(value)
            if found is not None:
                return found
    return None


def _rewrap(result: Any, info: tuple) -> Any:
    if isinstance(result, torch.Tensor):
        return UnplacedField._make(result, *info)
    if isinstance(result, (list, tuple)):
        return type(result)(_rewrap(r, info) for r in result)
    return result


def _placement_error(name: str, placement_idx: PlacementIdx, stage: int, last_stage: int) -> PlacementError:
    suggestion = -1 if stage == last_stage else stage
    return PlacementError(
        f"batch field {name!r} is used on pipeline stage {stage} but was placed on "
        f"placement_idx={placement_idx!r}: set placement_idx={suggestion} on its DistTensorData in the "
        f"dataset (or {ALL_STAGES!r} when several stages use it)"
    )
