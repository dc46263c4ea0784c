"""The containers a dataset's `__getitem__` returns and a loader's collate function stacks.

`DistTensorData` is one tensor plus how it is laid out over the device mesh (`sbp_list`,
LiBai's strings) and which pipeline stage needs it (`placement_idx`, see
`libai.data.placement`). `Instance` is an ordered bag of named fields whose names are the
model's `forward` argument names.

The metadata is checked once per batch (`DistTensorData.stack` checks the first sample's
and that the others agree; `model_input` checks a field that was never stacked), not in
every sample's constructor, which only stores what it is given: a dataset builds one
`Instance` and a few `DistTensorData` per sample, so they must cost about as much as a
tuple of tensors (measured in benchmarks/trainer_overhead.py, the MLP workload).
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Optional, Sequence, Union

import torch

from .placement import ALL_STAGES, UnplacedField, check_placement_idx, is_placed_on

# LiBai's SBP strings: "split_<dim>", "broadcast", "partial_sum".
_SBP_PATTERN = re.compile(r"^(split_\d+|broadcast|partial_sum)$")
_DEFAULT_SBP = ("split_0", "broadcast")


def _check_sbp_list(sbp_list: Sequence[str]) -> list[str]:
    """Return `sbp_list` as a list of strings, rejecting anything that is not an SBP string."""
    if isinstance(sbp_list, str):
        # A bare string would otherwise be read one character at a time.
        sbp_list = [sbp_list]
    sbp = [str(s) for s in sbp_list]
    bad = [s for s in sbp if not _SBP_PATTERN.match(s)]
    if bad or not sbp:
        raise ValueError(
            f"DistTensorData got sbp_list={list(sbp_list)!r}: each entry must be 'split_<dim>', "
            f"'broadcast' or 'partial_sum', e.g. ['split_0', 'broadcast']"
        )
    return sbp


class DistTensorData:
    """A tensor plus its layout: `sbp_list` (one entry per mesh axis) and `placement_idx`.

    `placement_idx=0` means the first pipeline stage needs the tensor (model inputs),
    `placement_idx=-1` the last one (labels for the loss), `k` stage k and "all" every
    stage (e.g. an attention mask every layer reads); under pipeline parallelism the other
    stages get no copy. In a loader each data-parallel rank holds its own shard of the
    global batch (`"split_0"` over the data-parallel axis); `sbp_list` says how the field
    is laid out over the stage's ("dp", "tp") mesh, and `to_global` applies it.
    """

    __slots__ = ("tensor", "_sbp", "placement_idx", "_checked")

    def __init__(
        self,
        tensor: torch.Tensor,
        sbp_list: Sequence[str] = _DEFAULT_SBP,
        placement_idx: Union[int, str] = 0,
    ) -> None:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"DistTensorData needs a torch.Tensor, got {type(tensor).__name__}: "
                f"wrap the value with torch.as_tensor(...)"
            )
        self.tensor = tensor
        # Kept as given (no copy per sample): `sbp_list` reads it as a list, `check`
        # validates it.
        self._sbp = sbp_list
        self.placement_idx = placement_idx
        self._checked = False

    @property
    def sbp_list(self) -> list:
        """The layout strings, one per mesh axis, e.g. ["split_0", "broadcast"]."""
        if not isinstance(self._sbp, list):
            # A bare string would otherwise be read one character at a time.
            self._sbp = [self._sbp] if isinstance(self._sbp, str) else list(self._sbp)
        return self._sbp

    @sbp_list.setter
    def sbp_list(self, value: Sequence[str]) -> None:
        self._sbp = value

    def check(self) -> "DistTensorData":
        """Validate `sbp_list` and `placement_idx` (once); raise a one-line error if bad."""
        if not self._checked:
            self.sbp_list = _check_sbp_list(self.sbp_list)
            self.placement_idx = check_placement_idx(self.placement_idx)
            self._checked = True
        return self

    def model_input(self, name: str) -> torch.Tensor:
        """This rank's view of the field as the model's `forward` argument `name`.

        On a pipeline stage the field is not placed on, an `UnplacedField` stand-in (no
        data, no copy). Otherwise this rank's part of the field laid out per `sbp_list`
        (through `to_global`) on this rank's device; the loader's layout, split over "dp"
        and whole over "tp", needs no data movement. Without a layout, the tensor itself.
        """
        from libai.utils import distributed as dist

        self.check()
        stages = dist.get_pipeline_parallel_size()
        if stages > 1:
            stage = dist.get_pipeline_parallel_rank()
            if not is_placed_on(self.placement_idx, stage, stages):
                return UnplacedField(name, self.tensor, self.placement_idx, stage, stages - 1)
        if self.sbp_list == list(_DEFAULT_SBP) or dist.get_stage_placement(0) is None:
            return self.tensor.to(dist.get_device(), non_blocking=True)
        return self._placed_copy().to_global().tensor.to_local()

    def _placed_copy(self) -> "DistTensorData":
        # `to_global` works in place (LiBai's semantics); the loader's batch stays as it is.
        stage = 0 if self.placement_idx == ALL_STAGES else self.placement_idx
        return DistTensorData(self.tensor, self.sbp_list, stage)

    def to_global(self, sbp=None, placement=None, device_type: Optional[str] = None) -> "DistTensorData":
        """Make `self.tensor` a DTensor over the ("dp", "tp") mesh of its pipeline stage, in place.

        The loader gave this rank its data-parallel shard of the global batch; the DTensor
        says so (`"split_0"` over "dp" -> `Shard(0)`, `"broadcast"` over "tp" ->
        `Replicate()`) without moving data. The mesh is the one of stage `placement_idx`
        (0: first, -1: last), unless `placement` (a DeviceMesh) is given; `sbp` (strings or
        placements) overrides `sbp_list`. `device_type` is accepted for LiBai compatibility:
        the device is this process's compute device. Without a layout (no mesh) the tensor
        stays a plain tensor on that device. Returns self.
        """
        # Imported here: the structures are also used in loader worker processes that never
        # build a device mesh.
        from torch.distributed.tensor import DTensor

        from libai.utils import distributed as dist
        from libai.utils.logger import log_ignored_arguments

        if device_type not in (None, dist.get_device().type):
            log_ignored_arguments("DistTensorData.to_global", "the tensor goes to this process's compute device",
                                  device_type=device_type)
        self.check()
        if placement is None:
            stage = dist.get_pipeline_parallel_rank() if self.placement_idx == ALL_STAGES else self.placement_idx
            placement = dist.get_stage_placement(stage)
        if placement is None:
            self.tensor = self.tensor.to(dist.get_device())
            return self
        sbp = sbp if sbp is not None else self.sbp_list
        placements = [dist.parse_sbp(p) if isinstance(p, str) else p for p in sbp]
        if isinstance(self.tensor, DTensor):
            self.tensor = self.tensor.redistribute(placement, placements)
            return self
        # The loader gave this rank its data-parallel shard, whole over tensor-parallel
        # ranks: that is the tensor's present layout, from which `sbp` is reached.
        loaded = DTensor.from_local(
            self.tensor.to(dist.get_device()), placement, [dist.parse_sbp(p) for p in _DEFAULT_SBP], run_check=False
        )
        self.tensor = loaded.redistribute(placement, placements)
        return self

    @staticmethod
    def stack(dist_tensor_list: Sequence["DistTensorData"]) -> "DistTensorData":
        """Stack equally shaped `DistTensorData` with equal `sbp_list`/`placement_idx` along a new dim 0.

        The first sample's layout is validated; the others must carry the same objects (a
        dataset passing the same constants, the usual case, costs one identity test per
        sample) or equal values. Anything else is explained item by item.
        """
        if len(dist_tensor_list) == 0:
            raise ValueError("DistTensorData.stack got an empty list: pass at least one item")
        first = dist_tensor_list[0]
        if isinstance(first, DistTensorData):
            sbp, place = first._sbp, first.placement_idx
            try:
                same = all(item._sbp is sbp and item.placement_idx == place for item in dist_tensor_list)
                if same:
                    stacked = torch.stack([item.tensor for item in dist_tensor_list], dim=0)
                    return DistTensorData(stacked, sbp, place).check()
            except (AttributeError, RuntimeError, TypeError):
                pass  # explained below
        return DistTensorData._stack_checked(dist_tensor_list)

    @staticmethod
    def _stack_checked(dist_tensor_list: Sequence["DistTensorData"]) -> "DistTensorData":
        """`stack` with every sample checked, each problem named with its item."""
        first = dist_tensor_list[0]
        if isinstance(first, DistTensorData):
            first.check()
        for i, item in enumerate(dist_tensor_list):
            if not isinstance(item, DistTensorData):
                raise TypeError(
                    f"DistTensorData.stack: item {i} is a {type(item).__name__}, not DistTensorData: "
                    f"return the same field type from every dataset sample"
                )
            if item.tensor.shape != first.tensor.shape:
                raise ValueError(
                    f"DistTensorData.stack: item {i} has shape {tuple(item.tensor.shape)} but item 0 "
                    f"has {tuple(first.tensor.shape)}: resize or pad samples to one shape"
                )
            if item.sbp_list != first.sbp_list:
                raise ValueError(
                    f"DistTensorData.stack: item {i} has sbp_list {item.sbp_list} but item 0 has "
                    f"{first.sbp_list}: give every sample of a field the same sbp_list"
                )
            if item.placement_idx != first.placement_idx:
                raise ValueError(
                    f"DistTensorData.stack: item {i} has placement_idx {item.placement_idx} but "
                    f"item 0 has {first.placement_idx}: give every sample of a field the same one"
                )
        stacked = torch.stack([item.tensor for item in dist_tensor_list], dim=0)
        return DistTensorData(stacked, first.sbp_list, first.placement_idx).check()

    def __repr__(self) -> str:
        return (
            f"DistTensorData(shape={tuple(self.tensor.shape)}, dtype={self.tensor.dtype}, "
            f"sbp_list={self.sbp_list}, placement_idx={self.placement_idx})"
        )


class Instance:
    """An ordered set of named fields: `Instance(images=..., labels=...)`.

    Fields are read with `inst.images` or `inst.get("images")` and written with
    `inst.images = x` or `inst.set("images", x)`; `Instance.stack` turns a list of samples
    into a batch.
    """

    def __init__(self, **fields: Any) -> None:
        # The keyword arguments' own dict (ordered, and new for each call), straight into
        # __dict__: one Instance per sample, so no copy and no per-field calls.
        self.__dict__["_fields"] = fields

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails. Reading `_fields` through __dict__ keeps
        # unpickling (which probes attributes before __init__ state exists) from recursing.
        fields = self.__dict__.get("_fields")
        if fields is None or name not in fields:
            raise AttributeError(f"Instance has no field {name!r}; fields: {list(fields or [])}")
        return fields[name]

    def set(self, name: str, value: Any) -> None:
        """Add or replace the field `name`."""
        self._fields[name] = value

    def has(self, name: str) -> bool:
        """Whether the field `name` exists."""
        return name in self._fields

    def remove(self, name: str) -> None:
        """Delete the field `name`."""
        if name not in self._fields:
            raise KeyError(f"Instance has no field {name!r} to remove; fields: {list(self._fields)}")
        del self._fields[name]

    def get(self, name: str) -> Any:
        """The value of field `name`."""
        if name not in self._fields:
            raise KeyError(f"Instance has no field {name!r}; fields: {list(self._fields)}")
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        """The fields as an ordered mapping (the object itself, not a copy)."""
        return self._fields

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    def __len__(self) -> int:
        return len(self._fields)

    def __iter__(self) -> Iterator:
        # A list of Instances is a batch; iterating one Instance is almost always a bug.
        raise TypeError("Instance is not iterable: use .get_fields().items()")

    def __getstate__(self) -> dict:
        return {"_fields": self._fields}

    def __setstate__(self, state: dict) -> None:
        self.__dict__["_fields"] = state["_fields"]

    @staticmethod
    def stack(instances: Sequence["Instance"]) -> "Instance":
        """Batch samples field by field.

        Tensors are stacked along a new dim 0, `DistTensorData` with `DistTensorData.stack`,
        lists are kept as a list of the samples' values, and any other type with a `stack`
        static method uses it.
        """
        if len(instances) == 0:
            raise ValueError("Instance.stack got an empty list: pass at least one Instance")
        first = instances[0]
        if type(first) is Instance:
            names = first._fields.keys()
            try:
                if all(inst._fields.keys() == names for inst in instances):
                    return _stack_fields(list(names), instances)
            except AttributeError:
                pass  # not all Instances: explained below
        for i, inst in enumerate(instances):
            if not isinstance(inst, Instance):
                raise TypeError(
                    f"Instance.stack: item {i} is a {type(inst).__name__}: a dataset used with "
                    f"the default collate must return Instance objects"
                )
        names = list(instances[0].get_fields())
        for i, inst in enumerate(instances):
            if list(inst.get_fields()) != names:
                raise ValueError(
                    f"Instance.stack: item {i} has fields {list(inst.get_fields())} but item 0 has "
                    f"{names}: return the same fields from every sample"
                )
        return _stack_fields(names, instances)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={_short_repr(v)}" for k, v in self._fields.items())
        return f"Instance({inner})"


def _stack_fields(names: list, instances: Sequence[Instance]) -> Instance:
    """Each field of `names` stacked over `instances` (which all have these fields)."""
    batch = Instance()
    for name in names:
        batch.set(name, _stack_values(name, [inst._fields[name] for inst in instances]))
    return batch


def _stack_values(name: str, values: list) -> Any:
    """Stack the values of one field across samples."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values, dim=0)
    if isinstance(first, list):
        return values
    stack = getattr(type(first), "stack", None)
    if callable(stack):
        return stack(values)
    raise TypeError(
        f"Instance.stack: field {name!r} holds {type(first).__name__}, which cannot be stacked: "
        f"use a torch.Tensor, a DistTensorData, a list, or a type with a stack() method"
    )


def _short_repr(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    return repr(value)
