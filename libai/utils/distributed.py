"""All of LiBai's parallel plumbing: process group, device mesh, ranks and layer placement.

The layout follows LiBai: pipeline stages are contiguous blocks of ranks, and inside a
stage the ranks form a (data parallel, tensor parallel) grid with tensor-parallel ranks
fastest. With dp2·tp2·pp2 on 8 ranks, stage 0 holds [[0, 1], [2, 3]] and stage 1 holds
[[4, 5], [6, 7]]. The mesh dimensions are named ``("pp", "dp", "tp")``.

`setup_dist_util(cfg.train.dist)` is called once per process (by `default_setup`); every
query below reads the layout it built.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

logger = logging.getLogger(__name__)

MESH_DIM_NAMES = ("pp", "dp", "tp")


class DistLayoutError(ValueError):
    """A `train.dist` layout that cannot run on the processes at hand."""


# --------------------------------------------------------------------------------------
# Process group and device
# --------------------------------------------------------------------------------------


def resolve_device_type(device: str = "auto") -> str:
    """Return "cuda" or "cpu" for `train.device` ("auto" picks CUDA when present)."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cuda", "cpu"):
        raise ValueError(f"train.device={device!r} is not supported: use 'auto', 'cuda' or 'cpu'")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device='cuda' but no CUDA device is visible: set train.device='cpu'")
    return device


def init_process_group(device_type: str = "cpu", timeout_s: int = 1800) -> None:
    """Start the default process group once: NCCL on CUDA, gloo on CPU.

    Under torchrun the rendezvous comes from the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT). A plain `python script.py` gets a one-process group on an
    in-memory store, so that collectives, DeviceMesh and distributed checkpoints work the
    same way on one process as on many.
    """
    if dist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(
            backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )


# --------------------------------------------------------------------------------------
# Layout: sizes, the layer -> stage map, the mesh
# --------------------------------------------------------------------------------------


def resolve_parallel_sizes(
    world_size: int,
    data_parallel_size: Optional[int] = None,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
) -> tuple[int, int, int]:
    """Return (dp, tp, pp) for `world_size` processes, inferring dp when it is None."""
    tp = int(tensor_parallel_size or 1)
    pp = int(pipeline_parallel_size or 1)
    if tp < 1 or pp < 1 or (data_parallel_size is not None and int(data_parallel_size) < 1):
        raise DistLayoutError(
            f"train.dist sizes must be positive, got data_parallel_size={data_parallel_size}, "
            f"tensor_parallel_size={tp}, pipeline_parallel_size={pp}"
        )
    if world_size % (tp * pp) != 0:
        raise DistLayoutError(
            f"tensor_parallel_size ({tp}) x pipeline_parallel_size ({pp}) = {tp * pp} does not "
            f"divide the world size ({world_size}): launch a multiple of {tp * pp} processes "
            f"or change train.dist"
        )
    inferred_dp = world_size // (tp * pp)
    if data_parallel_size is None:
        return inferred_dp, tp, pp
    dp = int(data_parallel_size)
    if dp * tp * pp != world_size:
        raise DistLayoutError(
            f"train.dist layout dp={dp} x tp={tp} x pp={pp} = {dp * tp * pp} does not match the "
            f"world size ({world_size}): set train.dist.data_parallel_size={inferred_dp} "
            f"(or leave it unset to infer it)"
        )
    return dp, tp, pp


def get_layer_stage_ids(
    num_layers: int,
    pipeline_parallel_size: int,
    custom_pipeline_stage_id: Optional[Sequence[int]] = None,
) -> list[int]:
    """Map each of `num_layers` layers to its pipeline stage, as LiBai does.

    Even split with the remainder going to the later stages. When there are at least 4
    stages, 8 layers and an even split, LiBai first inflates the layer count by
    `min(pp - 1, L // pp)` and truncates, which gives the middle stages one more layer and
    the last stage fewer (it also holds the head and the loss).
    """
    pp = int(pipeline_parallel_size)
    if custom_pipeline_stage_id is not None:
        stage_ids = [int(s) for s in custom_pipeline_stage_id]
        if len(stage_ids) != num_layers:
            raise DistLayoutError(
                f"train.dist.custom_pipeline_stage_id has {len(stage_ids)} entries but "
                f"pipeline_num_layers is {num_layers}: give one stage id per layer"
            )
        bad = [s for s in stage_ids if not 0 <= s < pp]
        if bad:
            raise DistLayoutError(
                f"train.dist.custom_pipeline_stage_id has stage ids {sorted(set(bad))} outside "
                f"[0, {pp - 1}] for pipeline_parallel_size={pp}"
            )
        if any(b < a for a, b in zip(stage_ids, stage_ids[1:])):
            raise DistLayoutError(
                "train.dist.custom_pipeline_stage_id must not decrease from one layer to the "
                f"next, got {stage_ids}"
            )
        return stage_ids
    if num_layers < pp:
        raise DistLayoutError(
            f"pipeline_num_layers ({num_layers}) is smaller than pipeline_parallel_size ({pp}): "
            f"every stage needs at least one layer"
        )
    total = num_layers
    if pp >= 4 and num_layers >= 8 and num_layers % pp == 0:
        total = num_layers + min(pp - 1, num_layers // pp)
    per_stage, remainder = divmod(total, pp)
    stage_ids: list[int] = []
    for stage in range(pp):
        # The last `remainder` stages take one extra layer each.
        count = per_stage + (1 if stage >= pp - remainder else 0)
        stage_ids.extend([stage] * count)
    return stage_ids[:num_layers]


@dataclass
class _DistributeUtil:
    """The layout of this run, built once by `setup_dist_util`."""

    device_type: str
    data_parallel_size: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    layer_stage_ids: list[int]
    mesh: DeviceMesh

    def coordinate(self, name: str) -> int:
        return self.mesh.get_local_rank(name)


_DIST_UTIL: Optional[_DistributeUtil] = None


def setup_dist_util(cfg_dist, device: str = "auto") -> _DistributeUtil:
    """Start the process group (if needed) and build the mesh from `train.dist`.

    `cfg_dist` is the `train.dist` config node (a mapping). Returns the layout; the same
    object backs every query in this module.
    """
    global _DIST_UTIL
    device_type = resolve_device_type(device)
    init_process_group(device_type)
    world_size = dist.get_world_size()
    get = (lambda key, default=None: cfg_dist.get(key, default)) if cfg_dist else (lambda k, d=None: d)
    dp, tp, pp = resolve_parallel_sizes(
        world_size,
        get("data_parallel_size"),
        get("tensor_parallel_size", 1),
        get("pipeline_parallel_size", 1),
    )
    num_layers = get("pipeline_num_layers") or pp
    stage_ids = get_layer_stage_ids(num_layers, pp, get("custom_pipeline_stage_id"))
    mesh = init_device_mesh(device_type, (pp, dp, tp), mesh_dim_names=MESH_DIM_NAMES)
    _DIST_UTIL = _DistributeUtil(device_type, dp, tp, pp, stage_ids, mesh)
    return _DIST_UTIL


def get_dist_util() -> _DistributeUtil:
    """The layout built by `setup_dist_util`; a one-process layout if none was set up."""
    if _DIST_UTIL is None:
        return setup_dist_util({})
    return _DIST_UTIL


def is_dist_util_ready() -> bool:
    """Whether `setup_dist_util` has run in this process."""
    return _DIST_UTIL is not None


# --------------------------------------------------------------------------------------
# Rank queries
# --------------------------------------------------------------------------------------


def get_rank() -> int:
    """Global rank of this process (0 when no process group runs)."""
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 when no process group runs)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def get_local_rank() -> int:
    """Rank of this process on its machine."""
    return int(os.environ.get("LOCAL_RANK", 0))


def get_data_parallel_size() -> int:
    """Number of data-parallel replicas."""
    return get_dist_util().data_parallel_size


def get_data_parallel_rank() -> int:
    """This process's data-parallel coordinate."""
    return get_dist_util().coordinate("dp")


def get_tensor_parallel_size() -> int:
    """Number of tensor-parallel ranks in each stage."""
    return get_dist_util().tensor_parallel_size


def get_tensor_parallel_rank() -> int:
    """This process's tensor-parallel coordinate."""
    return get_dist_util().coordinate("tp")


def get_pipeline_parallel_size() -> int:
    """Number of pipeline stages."""
    return get_dist_util().pipeline_parallel_size


def get_pipeline_parallel_rank() -> int:
    """The pipeline stage this process belongs to."""
    return get_dist_util().coordinate("pp")


def get_layer_stage_id(layer_idx: int) -> int:
    """Pipeline stage that owns `layer_idx` (-1 means the last layer)."""
    stage_ids = get_dist_util().layer_stage_ids
    return stage_ids[layer_idx]


def get_data_parallel_group() -> dist.ProcessGroup:
    """The process group over the data-parallel ranks of this (stage, tp) position."""
    return get_dist_util().mesh.get_group("dp")


def get_device() -> torch.device:
    """The device this process computes on."""
    device_type = get_dist_util().device_type
    if device_type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_main_process() -> bool:
    """True on global rank 0, which writes logs and files."""
    return get_rank() == 0


def is_last_process() -> bool:
    """True on the last global rank (the last pipeline stage lives there)."""
    return get_rank() == get_world_size() - 1


def synchronize() -> None:
    """Barrier across all processes; a no-op on one process."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# --------------------------------------------------------------------------------------
# Collectives over data-parallel ranks
# --------------------------------------------------------------------------------------


def all_reduce_mean_data_parallel(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over the data-parallel ranks (returns a new tensor)."""
    result = tensor.detach().clone()
    if get_data_parallel_size() > 1:
        dist.all_reduce(result, group=get_data_parallel_group())
        result /= get_data_parallel_size()
    return result


def gather_data_parallel(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped `tensor`s from all data-parallel ranks along dim 0.

    The result is in data-parallel rank order on every rank, which is the order in which
    the samplers hand out each global batch.
    """
    if get_data_parallel_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_data_parallel_size())]
    dist.all_gather(parts, tensor.contiguous(), group=get_data_parallel_group())
    return torch.cat(parts, dim=0)


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from global rank `src` to every rank and return it."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# --------------------------------------------------------------------------------------
# Data-parallel gradients
# --------------------------------------------------------------------------------------


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Copy the first data-parallel replica's parameters and buffers to the others.

    Every rank builds its model from the same seed, so this is a safety net against user
    code that draws random numbers per rank.
    """
    if get_data_parallel_size() == 1:
        return
    group = get_data_parallel_group()
    src = dist.get_global_rank(group, 0)
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=src, group=group)


class GradientReducer:
    """Sum micro-batch gradients in float64 and average them over data-parallel ranks.

    A float32 sum depends on the order of its terms, and Adam turns a last-bit difference
    in a near-zero gradient into a full-size step of the other sign. Summing the few
    micro-batch gradients of a global batch in float64 is exact in practice, so the mean
    gradient, rounded once to float32, is the same however the global batch is split into
    data-parallel ranks and micro-batches: every layout takes the same step.

    Use: after each micro-batch's backward call `accumulate()`; after the last one,
    `reduce()` leaves the mean gradient over all `num_micro_batches x dp` micro-batches
    in `param.grad`. Micro-batch losses must not be divided by the number of micro-batches.
    """

    def __init__(self, params, num_micro_batches: int) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.divisor = float(num_micro_batches * get_data_parallel_size())
        device = self.params[0].device if self.params else get_device()
        self.buffer = torch.zeros(sum(p.numel() for p in self.params), dtype=torch.float64, device=device)
        self.views = []
        offset = 0
        for p in self.params:
            self.views.append(self.buffer[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def accumulate(self) -> None:
        """Add the current `.grad`s into the float64 sum and clear them."""
        for p, view in zip(self.params, self.views):
            if p.grad is not None:
                view.add_(p.grad)
                p.grad = None

    def reduce(self) -> None:
        """All-reduce the sum over data-parallel ranks and write the mean into `.grad`."""
        if get_data_parallel_size() > 1:
            dist.all_reduce(self.buffer, group=get_data_parallel_group())
        self.buffer.div_(self.divisor)
        for p, view in zip(self.params, self.views):
            p.grad = view.to(p.dtype)
        self.buffer.zero_()


def needs_gradient_reducer(num_micro_batches: int) -> bool:
    """Whether a step sums more than one micro-batch gradient (accumulation or dp)."""
    return num_micro_batches > 1 or get_data_parallel_size() > 1

