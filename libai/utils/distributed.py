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
import functools
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Placement, Replicate, Shard

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
        dist.init_process_group(backend=backend, timeout=timeout, **_attempt_store(timeout))
    else:
        dist.init_process_group(
            backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )


# How long `shutdown_process_groups` leaves the GIL to gloo's worker threads (see there).
_GLOO_DRAIN_S = 0.2


def shutdown_process_groups() -> None:
    """Destroy every process group at the end of a finished run, then let gloo's worker
    threads finish their last collectives before the interpreter exits.

    Why the pause: a gloo worker thread frees a collective's tensors just after the caller's
    `wait()` has returned, and freeing a tensor that Python has seen takes the GIL. If the
    interpreter has started finalizing by then, that thread is terminated mid-destructor and
    the process aborts ("terminate called without an active exception", status 134), which
    fails a run that had finished and saved everything. `destroy_process_group` does not
    join those threads (the groups live on in torch's caches), so this sleeps, releasing the
    GIL, long enough for them to take it (gloo serves every CPU run, and the CPU groups of
    GPU runs). A no-op without a process group.
    """
    if not dist.is_initialized():
        return
    dist.destroy_process_group()
    time.sleep(_GLOO_DRAIN_S)


def _attempt_store(timeout: datetime.timedelta) -> dict:
    """Under torchrun, the rendezvous store with a prefix of its own per restart attempt.

    torchrun's store outlives a restart (`--max-restarts`) and `init_process_group` reuses
    its keys as they are, so restarted gloo workers could read the dead workers' addresses
    and fail to connect; a fresh prefix per attempt (TORCHELASTIC_RESTART_COUNT) avoids it.
    Elsewhere ({}), `init_process_group` reads the environment itself.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return {}
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=not agent_hosts_store and rank == 0,
        timeout=timeout,
    )
    return dict(store=dist.PrefixStore(f"libai/attempt_{attempt}", store), rank=rank, world_size=world_size)


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


@dataclass(eq=False)  # hashed by identity (a cache key per layout)
class _DistributeUtil:
    """The layout of this run, built once by `setup_dist_util`.

    Without a process group (a plain script: no `default_setup`) the layout has one rank
    and no mesh (`mesh is None`): layers then keep plain tensors and communicate nothing.
    """

    device_type: str
    data_parallel_size: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    layer_stage_ids: list[int]
    mesh: Optional[DeviceMesh]
    # One ("dp", "tp") mesh per pipeline stage; a rank takes part only in its own stage's.
    stage_meshes: list[DeviceMesh]
    # With pp > 1: this rank's group with its peer of the same (dp, tp) coordinates on the
    # other end of the pipeline (first <-> last stage), for weights both ends hold.
    first_last_group: Optional[dist.ProcessGroup] = None

    def coordinate(self, name: str) -> int:
        return 0 if self.mesh is None else self.mesh.get_local_rank(name)

    def group(self, name: str) -> dist.ProcessGroup:
        """The process group of mesh dimension `name` ("pp", "dp" or "tp")."""
        if self.mesh is None:
            raise DistLayoutError(
                f"there is no {name!r} process group: no parallel layout was set up in this process; "
                f"call libai.engine.default_setup(cfg, args) or distributed.setup_dist_util(cfg.train.dist) first"
            )
        return self.mesh.get_group(name)


@functools.lru_cache(maxsize=None)
def _no_layout(device_type: str) -> _DistributeUtil:
    # One rank, no mesh, no process group: what a plain script gets. Cached per device
    # type so that layers keep meeting the same object (it holds no resources).
    return _DistributeUtil(device_type, 1, 1, 1, [0], None, [])


_DIST_UTIL: Optional[_DistributeUtil] = None


def setup_dist_util(cfg_dist, device: str = "auto", num_virtual_stages: int = 1) -> _DistributeUtil:
    """Start the process group (if needed) and build the mesh from `train.dist`.

    `cfg_dist` is the `train.dist` config node (a mapping). With `num_virtual_stages` > 1
    (interleaved pipeline schedules) the layers are split into `pp x num_virtual_stages`
    stages and virtual stage k runs on pipeline rank k % pp, so `get_layer_stage_id` gives
    the rank that holds a layer. Returns the layout; the same object backs every query in
    this module.
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
    num_layers = get("pipeline_num_layers")
    if num_layers is None:
        if pp > 1:
            raise DistLayoutError(
                "train.dist.pipeline_num_layers is not set: pipeline parallelism needs the "
                "model's number of layers to place them on stages"
            )
        num_layers = 1
    if num_virtual_stages > 1:
        if get("custom_pipeline_stage_id") is not None:
            raise DistLayoutError(
                "train.dist.custom_pipeline_stage_id does not combine with the interleaved "
                "schedule: drop one of them"
            )
        stage_ids = [s % pp for s in get_layer_stage_ids(num_layers, pp * num_virtual_stages)]
    else:
        stage_ids = get_layer_stage_ids(num_layers, pp, get("custom_pipeline_stage_id"))
    mesh = init_device_mesh(device_type, (pp, dp, tp), mesh_dim_names=MESH_DIM_NAMES)
    if pp == 1:
        stage_meshes = [mesh["dp", "tp"]]
    else:
        # Every rank creates every stage's groups, in the same order (group creation is
        # collective).
        stage_meshes = [
            DeviceMesh(device_type, mesh.mesh[stage], mesh_dim_names=("dp", "tp")) for stage in range(pp)
        ]
    _DIST_UTIL = _DistributeUtil(device_type, dp, tp, pp, stage_ids, mesh, stage_meshes)
    if pp > 1:
        _DIST_UTIL.first_last_group = _first_last_group(mesh)
    return _DIST_UTIL


def _first_last_group(mesh: DeviceMesh) -> Optional[dist.ProcessGroup]:
    """Create, on every rank and in the same order, one group per (dp, tp) coordinate
    holding its first- and last-stage ranks; return the one this rank is in (or None)."""
    grid = mesh.mesh  # (pp, dp, tp) tensor of global ranks
    mine = None
    for dp_rank in range(grid.shape[1]):
        for tp_rank in range(grid.shape[2]):
            ranks = [int(grid[0, dp_rank, tp_rank]), int(grid[-1, dp_rank, tp_rank])]
            group = dist.new_group(ranks)
            if get_rank() in ranks:
                mine = group
    return mine


def get_dist_util() -> _DistributeUtil:
    """The layout built by `setup_dist_util`; without one, a one-rank layout with no mesh.

    It never starts a process group: `default_setup` (or an inference pipeline, or a
    script calling `setup_dist_util`) creates the layout, layers only read it.
    """
    if _DIST_UTIL is None:
        return _no_layout(resolve_device_type("auto"))
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
    """Pipeline rank that holds `layer_idx` (-1 means the last layer); 0 without pipelining."""
    util = get_dist_util()
    if util.pipeline_parallel_size == 1:
        return 0
    stage_ids = util.layer_stage_ids
    if not -len(stage_ids) <= layer_idx < len(stage_ids):
        raise DistLayoutError(
            f"a layer has layer_idx={layer_idx} but train.dist.pipeline_num_layers is "
            f"{len(stage_ids)}: set it to the model's number of layers"
        )
    return stage_ids[layer_idx]


def get_layer_placement(layer_idx: int = 0) -> Optional[DeviceMesh]:
    """The ("dp", "tp") mesh of the pipeline stage that owns `layer_idx` (-1: the last layer);
    None without a layout.

    LiBai's `dist.get_layer_placement`: parameters of that layer live on this mesh,
    replicated over "dp" and split or replicated over "tp".
    """
    util = get_dist_util()
    return util.stage_meshes[get_layer_stage_id(layer_idx)] if util.mesh is not None else None


@functools.lru_cache(maxsize=None)
def _stage_tp_mesh(util: "_DistributeUtil", stage: int) -> DeviceMesh:
    stage_mesh = util.stage_meshes[stage]
    if stage_mesh.get_coordinate() is not None:
        return stage_mesh["tp"]
    # A stage this rank is not part of: its layers' parameters are empty shells here, so
    # a mesh without process groups (never used to communicate) describes them.
    ranks = util.mesh.mesh[stage, util.coordinate("dp")]
    return DeviceMesh(util.device_type, ranks, mesh_dim_names=("tp",), _init_backend=False)


def get_layer_tp_mesh(layer_idx: int = 0) -> Optional[DeviceMesh]:
    """The 1-D "tp" mesh over which `layer_idx`'s parameters are split or replicated;
    None without a layout (parameters are plain tensors)."""
    util = get_dist_util()
    return _stage_tp_mesh(util, get_layer_stage_id(layer_idx)) if util.mesh is not None else None


def get_shared_tp_mesh(layer_idx: int = 0) -> Optional[DeviceMesh]:
    """The "tp" mesh of a weight that both its own stage and the last stage use (LiBai's
    word embeddings, read again by the tied LM head): on a last-stage rank the last
    stage's, elsewhere the one of `layer_idx`'s stage.

    The last stage keeps its own replica so the head needs no weight transfer per
    micro-batch; `sync_first_last_grads` sums the two replicas' gradients once per step.
    """
    util = get_dist_util()
    if util.pipeline_parallel_size > 1 and util.stage_meshes[-1].get_coordinate() is not None:
        return _stage_tp_mesh(util, util.pipeline_parallel_size - 1)
    return get_layer_tp_mesh(layer_idx)


def is_pipeline_replica(param: torch.Tensor) -> bool:
    """Whether `param` is the last stage's replica of a weight owned by an earlier stage
    (tagged by the pipeline engine; counted once in gradient norms, since its gradient
    equals the owner's after `sync_first_last_grads`)."""
    return bool(getattr(param, "_libai_pipeline_replica", False))


def sync_first_last_grads(params) -> None:
    """Sum the gradients of `params`, weights held by both the first and the last
    pipeline stage (each end computed its own part of the gradient)."""
    group = get_dist_util().first_last_group
    if group is None:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(_local(p.grad), group=group)


def get_stage_placement(stage: int) -> Optional[DeviceMesh]:
    """The ("dp", "tp") mesh of pipeline stage `stage` (-1: the last stage); None without a layout."""
    util = get_dist_util()
    return util.stage_meshes[stage] if util.mesh is not None else None


def get_tensor_parallel_group() -> dist.ProcessGroup:
    """The process group over this rank's tensor-parallel peers (same stage and dp rank)."""
    return get_dist_util().group("tp")


def get_pipeline_parallel_group() -> dist.ProcessGroup:
    """The process group over the ranks that share this rank's (dp, tp) coordinates."""
    return get_dist_util().group("pp")


_SBP_TO_PLACEMENT = {"broadcast": Replicate, "partial_sum": Partial}


def parse_sbp(sbp: str) -> Placement:
    """One of LiBai's SBP strings as a DTensor placement: "split_<d>" -> Shard(d),
    "broadcast" -> Replicate(), "partial_sum" -> Partial()."""
    if sbp.startswith("split_") and sbp[len("split_") :].isdigit():
        return Shard(int(sbp[len("split_") :]))
    if sbp in _SBP_TO_PLACEMENT:
        return _SBP_TO_PLACEMENT[sbp]()
    raise ValueError(f"unknown SBP {sbp!r}: use 'split_<dim>', 'broadcast' or 'partial_sum'")


def get_nd_sbp(sbp_list: Sequence[str]) -> list[Placement]:
    """Placements over the ("dp", "tp") mesh from LiBai's SBP strings, one per mesh axis."""
    if len(sbp_list) != 2:
        raise ValueError(
            f"sbp_list {list(sbp_list)} needs one entry per mesh axis (data parallel, tensor "
            f"parallel), e.g. ['split_0', 'broadcast']"
        )
    return [parse_sbp(s) for s in sbp_list]


def get_hidden_sbp() -> list[Placement]:
    """Placements of hidden states: batch split over "dp", replicated over "tp"."""
    return [Shard(0), Replicate()]


def get_data_parallel_group() -> dist.ProcessGroup:
    """The process group over the data-parallel ranks of this (stage, tp) position."""
    return get_dist_util().group("dp")


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


def build_once_per_machine(ready: Callable[[], bool], build: Callable[[], None]) -> None:
    """Run `build()` on each machine's local rank 0 unless `ready()`, then have every rank
    wait for it: data a run makes on first use (the processes of a machine share its disk)."""
    if os.environ.get("LOCAL_RANK", "0") == "0" and not ready():
        build()
    synchronize()


def new_cpu_group() -> Optional[dist.ProcessGroup]:
    """A process group over all ranks that reduces CPU tensors: None (the default group)
    when that is gloo or there is no process group, else a new gloo group (collective:
    every rank must call it). Small host-side agreements use it without a device sync."""
    if not dist.is_initialized() or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def all_reduce_max_int(value: int, group: Optional[dist.ProcessGroup] = None) -> int:
    """The largest of the ranks' `value`s, reduced on the CPU over `group` (see `new_cpu_group`)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return int(value)
    flag = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return int(flag.item())


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


def broadcast_tensor(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` on every rank with global rank `src`'s (shape and dtype must agree).

    Generation uses it to give every rank the tokens rank `src` chose, so that tensor- and
    pipeline-parallel ranks always feed the same ids to their part of the model.
    """
    if get_world_size() > 1:
        dist.broadcast(tensor, src=src)
    return tensor


# --------------------------------------------------------------------------------------
# Tensor-parallel collectives with autograd (Megatron's "regions")
# --------------------------------------------------------------------------------------


def _all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    tensor = tensor.clone()
    dist.all_reduce(tensor, group=group)
    return tensor


def _all_gather_last_dim(tensor: torch.Tensor, group) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=-1)


def _own_chunk_last_dim(tensor: torch.Tensor, group) -> torch.Tensor:
    chunks = tensor.chunk(dist.get_world_size(group), dim=-1)
    return chunks[dist.get_rank(group)].contiguous()


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad, ctx.group), None


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _GatherFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather_last_dim(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _own_chunk_last_dim(grad, ctx.group), None


class _ScatterToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _own_chunk_last_dim(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather_last_dim(grad, ctx.group), None


def _tp_group(group) -> Optional[dist.ProcessGroup]:
    """`group`, else this rank's tensor-parallel group; None when there is nothing to
    communicate with (one tensor-parallel rank), so no layout is needed."""
    if group is not None:
        return group if dist.get_world_size(group) > 1 else None
    return get_tensor_parallel_group() if get_tensor_parallel_size() > 1 else None


def copy_to_tensor_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """Identity forward; backward sums the gradient over tensor-parallel ranks.

    Goes in front of a column-parallel layer whose input is replicated over "tp".
    """
    group = _tp_group(group)
    return x if group is None else _CopyToRegion.apply(x, group)


def reduce_from_tensor_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """Sum over tensor-parallel ranks forward; identity backward (after a row-parallel matmul)."""
    group = _tp_group(group)
    return x if group is None else _ReduceFromRegion.apply(x, group)


def gather_from_tensor_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate the last dimension over tensor-parallel ranks; backward keeps this rank's part."""
    group = _tp_group(group)
    return x if group is None else _GatherFromRegion.apply(x, group)


def scatter_to_tensor_parallel_region(x: torch.Tensor, group=None) -> torch.Tensor:
    """Keep this rank's chunk of the last dimension; backward concatenates the gradients."""
    group = _tp_group(group)
    return x if group is None else _ScatterToRegion.apply(x, group)


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
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if holds(tensor):
                dist.broadcast(_local(tensor), src=src, group=group)


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
        locals_ = [_local(p) for p in self.params]
        device = locals_[0].device if locals_ else get_device()
        self.buffer = torch.zeros(sum(t.numel() for t in locals_), dtype=torch.float64, device=device)
        self.views = []
        offset = 0
        for t in locals_:
            self.views.append(self.buffer[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def accumulate(self) -> None:
        """Add the current `.grad`s into the float64 sum and clear them."""
        for p, view in zip(self.params, self.views):
            if p.grad is not None:
                view.add_(_local(p.grad))
                p.grad = None

    def reduce(self) -> None:
        """All-reduce the sum over data-parallel ranks and write the mean into `.grad`."""
        if get_data_parallel_size() > 1:
            dist.all_reduce(self.buffer, group=get_data_parallel_group())
        self.buffer.div_(self.divisor)
        for p, view in zip(self.params, self.views):
            p.grad = _grad_like(p, view.to(p.dtype))
        self.buffer.zero_()


class BucketedGradientReducer:
    """Average gradients over data-parallel ranks the way `DistributedDataParallel` does:
    in the gradients' own dtype, in buckets launched during the step's last backward.

    Micro-batch gradients add up in `param.grad` (autograd's own accumulation). During the
    last micro-batch's backward, a hook on each parameter marks its gradient ready; a
    bucket (parameters in reverse registration order, the order backward finishes them, up
    to `bucket_cap_mb` and `bucket_max_tensors`) whose gradients are all ready is copied
    into one flat buffer and all-reduced asynchronously, so communication overlaps the rest
    of backward. Buckets start in a fixed order, the same on every rank, whatever order the
    hooks fire in. `reduce()` waits for them, divides by `num_micro_batches x dp` and puts
    the mean back into `param.grad`.

    The sum is in float32 (or the gradients' dtype), so layouts differ in the last bits;
    `GradientReducer` (`train.dist.exact_reduction=True`) is the exact, slower alternative.
    Use it as `GradientReducer`: `accumulate()` after each micro-batch's backward,
    `reduce()` after the last; micro-batch losses must not be divided by their number.
    With `overlap=False` every bucket starts in `reduce()` (a pipeline schedule, whose
    stages' backward calls do not map one to one onto the step's micro-batches).
    """

    def __init__(
        self,
        params,
        num_micro_batches: int,
        bucket_cap_mb: float = 25.0,
        bucket_max_tensors: Optional[int] = None,
        overlap: bool = True,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.num_micro_batches = int(num_micro_batches)
        self.divisor = float(self.num_micro_batches * get_data_parallel_size())
        self.group = get_data_parallel_group() if get_data_parallel_size() > 1 else None
        self.buckets = _make_buckets(self.params, bucket_cap_mb * 2**20, bucket_max_tensors)
        self._bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self._ready = [0] * len(self.buckets)
        self._in_flight: list[tuple[int, torch.Tensor, Any]] = []
        self._micro_batch = 0
        # Buckets started inside backward, counted over all steps so far (the overlap;
        # for tests and logs).
        self.launched_in_backward = 0
        if overlap:
            for p in self.params:
                p.register_post_accumulate_grad_hook(self._grad_ready)

    def accumulate(self) -> None:
        """Note that one micro-batch's backward is done (its gradients stay in `.grad`)."""
        self._micro_batch += 1

    def reduce(self) -> None:
        """Start the buckets backward did not, wait for all, write the means into `.grad`."""
        self._launch_in_order(force=True)
        for index, flat, work in self._in_flight:
            if work is not None:
                work.wait()
            flat.div_(self.divisor)
            offset = 0
            for p in self.buckets[index]:
                numel = _local(p).numel()
                p.grad = _grad_like(p, flat[offset : offset + numel].view_as(_local(p)))
                offset += numel
        self._in_flight.clear()
        self._ready = [0] * len(self.buckets)
        self._micro_batch = 0

    def _grad_ready(self, param: torch.Tensor) -> None:
        if self._micro_batch != self.num_micro_batches - 1:
            return  # not the last micro-batch: the gradient keeps accumulating
        self._ready[self._bucket_of[id(param)]] += 1
        started = len(self._in_flight)
        self._launch_in_order(force=False)
        self.launched_in_backward += len(self._in_flight) - started

    def _launch_in_order(self, force: bool) -> None:
        """Start the next buckets whose gradients are all ready (all of them: `force`)."""
        while len(self._in_flight) < len(self.buckets):
            index = len(self._in_flight)
            bucket = self.buckets[index]
            if not force and self._ready[index] < len(bucket):
                return
            flat = torch.cat([_local(p.grad).reshape(-1) if p.grad is not None else _local(p).new_zeros(_local(p).numel()) for p in bucket])
            work = dist.all_reduce(flat, group=self.group, async_op=True) if self.group is not None else None
            self._in_flight.append((index, flat, work))


def _grad_like(param: torch.Tensor, local_grad: torch.Tensor) -> torch.Tensor:
    """`local_grad` (this rank's part) as a gradient of `param`: a DTensor with the
    parameter's mesh and placements when `param` is one, else as it is."""
    if isinstance(param, DTensor):
        return DTensor.from_local(
            local_grad, param.device_mesh, param.placements, run_check=False, shape=param.shape, stride=param.stride()
        )
    return local_grad


def _make_buckets(params: list, cap_bytes: float, max_tensors: Optional[int]) -> list[list]:
    """Parameters in reverse order, cut into buckets of one dtype and device, each up to
    `cap_bytes` (a larger parameter gets a bucket of its own) and `max_tensors` tensors."""
    buckets: list[list] = []
    size = 0.0
    for p in reversed(params):
        local = _local(p)
        nbytes = local.numel() * local.element_size()
        current = buckets[-1] if buckets else None
        fits = (
            current is not None
            and _local(current[0]).dtype == local.dtype
            and _local(current[0]).device == local.device
            and size + nbytes <= cap_bytes
            and (max_tensors is None or len(current) < max_tensors)
        )
        if fits:
            current.append(p)
            size += nbytes
        else:
            buckets.append([p])
            size = nbytes
    return buckets


def holds(tensor: torch.Tensor) -> bool:
    """Whether this rank holds data of `tensor`: False for another pipeline stage's
    parameters (a DTensor on a mesh without this rank, or a freed `meta` placeholder)."""
    if isinstance(tensor, DTensor):
        return tensor.device_mesh.get_coordinate() is not None
    return not (isinstance(tensor, torch.Tensor) and tensor.is_meta)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor; a plain tensor as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _sharded_mesh_dims(tensor: torch.Tensor) -> tuple[int, ...]:
    """Mesh dimensions over which `tensor` is split (FSDP's `_StridedShard` included)."""
    if not isinstance(tensor, DTensor):
        return ()
    dims = []
    for dim, placement in enumerate(tensor.placements):
        if placement.is_partial():
            raise ValueError("clip_grad_norm_ got a gradient with a pending (Partial) reduction")
        if not placement.is_replicate():
            dims.append(dim)
    return tuple(dims)


@torch.no_grad()
def global_grad_norm(grads: Sequence[torch.Tensor], norm_type: float = 2.0) -> torch.Tensor:
    """Norm of all `grads` together, each taken whole across the ranks that hold its parts.

    A DTensor gradient split over some mesh dimensions (tensor parallel, ZeRO's data
    parallel, or both) has its local norms combined over exactly those dimensions; a
    replicated dimension is not summed. The pipeline stages' norms are then combined.
    """
    norm_type = float(norm_type)
    if not grads:
        return torch.tensor(0.0)
    norms = list(torch._foreach_norm([_local(g) for g in grads], norm_type))
    # Batch the reductions per (mesh, split dims); dict order is the parameter order, the
    # same on every rank of a stage, so the collectives line up.
    batches: dict[tuple, list[int]] = {}
    meshes: dict[tuple, DeviceMesh] = {}
    for i, grad in enumerate(grads):
        dims = _sharded_mesh_dims(grad)
        if dims:
            key = (id(grad.device_mesh), dims)
            batches.setdefault(key, []).append(i)
            meshes[key] = grad.device_mesh
    for key, indices in batches.items():
        mesh, dims = meshes[key], key[1]
        parts = torch.stack([norms[i] for i in indices])
        parts = parts if math.isinf(norm_type) else parts.pow(norm_type)
        for dim in dims:
            op = dist.ReduceOp.MAX if math.isinf(norm_type) else dist.ReduceOp.SUM
            dist.all_reduce(parts, op=op, group=mesh.get_group(dim))
        parts = parts if math.isinf(norm_type) else parts.pow(1.0 / norm_type)
        for slot, i in enumerate(indices):
            norms[i] = parts[slot]
    total = torch.linalg.vector_norm(torch.stack(norms), norm_type)
    if get_pipeline_parallel_size() > 1:
        if math.isinf(norm_type):
            dist.all_reduce(total, op=dist.ReduceOp.MAX, group=get_pipeline_parallel_group())
        else:
            total = total.pow(norm_type)
            dist.all_reduce(total, group=get_pipeline_parallel_group())
            total = total.pow(1.0 / norm_type)
    return total


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
    """Clip gradients on their global norm, however they are split (tp, ZeRO dp, pp).

    Same arithmetic as `torch.nn.utils.clip_grad_norm_` (coefficient
    `max_norm / (norm + 1e-6)` clamped at 1) on the global norm of `global_grad_norm`,
    so it is right for ZeRO's data-parallel shards as well as tensor-parallel ones.
    Returns the total norm.
    """
    parameters = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in parameters]
    if not grads:
        return torch.tensor(0.0)
    total = global_grad_norm([p.grad for p in parameters if not is_pipeline_replica(p)], norm_type)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_([_local(g) for g in grads], coef.to(_local(grads[0]).device))
    return total

def make_gradient_reducer(
    model: torch.nn.Module,
    num_micro_batches: int,
    exact: bool = False,
    bucket_cap_mb: float = 25.0,
    bucket_max_tensors: Optional[int] = None,
    overlap: bool = True,
) -> Optional[Union[GradientReducer, BucketedGradientReducer]]:
    """The reducer for the gradients of `model`'s parameters this rank trains: DDP's way
    (`BucketedGradientReducer`, buckets of `bucket_cap_mb` / `bucket_max_tensors`, started
    during backward unless `overlap=False`) or, with `exact`, the float64
    `GradientReducer`; None when a step has one micro-batch on one data-parallel replica
    (nothing to sum). Makes the replicas' weights equal first."""
    if num_micro_batches == 1 and get_data_parallel_size() == 1:
        return None
    broadcast_parameters(model)
    params = [p for p in model.parameters() if holds(p)]
    if exact:
        return GradientReducer(params, num_micro_batches)
    return BucketedGradientReducer(params, num_micro_batches, bucket_cap_mb, bucket_max_tensors, overlap)

