"""Shared helpers of the parallel layers: building sharded parameters and local views.

Every layer builds its parameters the same way (see the team's parameter convention): the
FULL tensor is drawn from the global RNG exactly as a one-process layer would draw it, then
each rank keeps its shard as a DTensor on the tensor-parallel mesh of the layer's pipeline
stage (a plain tensor where that mesh has this one rank). So the initial weights do not
depend on the layout.

Without a layout (a plain script that never called `default_setup` / `setup_dist_util`)
there is no mesh: `tp_mesh` is None and parameters are plain tensors, so building and
training a model needs no process group.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, distribute_tensor

from libai.utils import distributed as dist

InitMethod = Callable[[torch.Tensor], object]


def tp_mesh(layer_idx: int = 0) -> Optional[DeviceMesh]:
    """The 1-D "tp" mesh of the pipeline stage that owns `layer_idx` (-1: the last layer);
    None when no layout was set up."""
    return dist.get_layer_tp_mesh(layer_idx)


def mesh_size(mesh: Optional[DeviceMesh]) -> int:
    """Number of ranks of a 1-D mesh (1 without a mesh)."""
    return 1 if mesh is None else mesh.size()


def mesh_rank(mesh: Optional[DeviceMesh]) -> int:
    """This rank's position on a 1-D mesh; 0 on a rank outside it (another pipeline stage)
    or without a mesh.

    A rank outside the mesh holds empty shards and never runs the layer, so the value only
    has to be valid, not meaningful.
    """
    coordinate = mesh.get_coordinate() if mesh is not None else None
    return coordinate[0] if coordinate else 0


def check_divisible(size: int, tp_size: int, what: str) -> None:
    """Raise a one-line ValueError when `size` cannot be split evenly over `tp_size` ranks."""
    if size % tp_size != 0:
        raise ValueError(
            f"{what} ({size}) is not divisible by tensor_parallel_size ({tp_size}): "
            f"change the model size or train.dist.tensor_parallel_size"
        )


@torch.no_grad()
def full_init(
    shape: tuple[int, ...],
    init_method: Optional[InitMethod],
    dtype: Optional[torch.dtype] = None,
    fill: float = 0.0,
) -> torch.Tensor:
    """A full-size tensor initialised by `init_method`, or filled with `fill` when it is None.

    Drawn on this rank's device from the global RNG, so every rank of a layer draws the same
    numbers as a one-process run seeded the same way.
    """
    tensor = torch.empty(shape, dtype=dtype or torch.get_default_dtype(), device=dist.get_device())
    if init_method is None:
        tensor.fill_(fill)
    else:
        init_method(tensor)
    return tensor


def make_parameter(full: torch.Tensor, mesh: Optional[DeviceMesh], placement: Placement) -> nn.Parameter:
    """`nn.Parameter(DTensor)` holding this rank's `placement` shard of `full` on `mesh`;
    a plain `nn.Parameter(full)` when nothing is split: no mesh, or a one-rank mesh that
    this rank belongs to.

    Plain tensors skip DTensor's dispatch in every optimizer step and layer call (the one
    rank holds the whole tensor anyway); checkpoints load across layouts either way. A
    one-rank mesh of another pipeline stage keeps its DTensor: an empty shell that says
    this rank does not hold the parameter (`distributed.holds`).

    Every rank already holds the same full tensor (same seed, same draws), so each keeps its
    own slice locally (`src_data_rank=None`) instead of receiving it from rank 0.
    """
    if mesh is None or (mesh.size() == 1 and mesh.get_coordinate() is not None):
        return nn.Parameter(full.detach())
    return nn.Parameter(distribute_tensor(full.detach(), mesh, [placement], src_data_rank=None))


def to_local(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """This rank's part of a DTensor (input or parameter); a plain tensor or None as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a DTensor, gathered over its mesh (a collective for the ranks of that
    mesh); a plain tensor, already whole, as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
