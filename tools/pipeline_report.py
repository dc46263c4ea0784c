#!/usr/bin/env python
"""Per-stage report of a pipeline-parallel layout, measured in one process.

    python tools/pipeline_report.py CONFIG [--repeats 5] [--json OUT.json] [key=value ...]
    python tools/pipeline_report.py tests/configs/tiny_gpt.py train.dist.pipeline_parallel_size=2

The config is loaded as `tools/train_net.py` loads it (`LazyConfig.load` + overrides), but
the report runs in ONE process on the CPU: it builds the model whole and computes the
layer -> stage map that `train.dist.pipeline_parallel_size`, `pipeline_num_layers` and
`custom_pipeline_stage_id` would give (`libai.utils.distributed.get_layer_stage_ids`; the
interleaved schedule splits into 2 x pp virtual stages, as `libai.engine.pipeline` does).
The blocks are those `libai.engine.pipeline.find_blocks` finds (outermost modules with a
`layer_idx`); other top-level modules (LM head, loss) belong to the last stage, as in the
pipeline engine. For each stage it prints

- its layers and blocks, and its parameter count (a weight shared by two blocks counts
  once, for the first block; the counts sum to the model's total);
- forward and backward time: every block is replayed alone on the input it received in a
  real forward of one micro-batch from the config's train loader (median of `--repeats`),
  backward with a fixed random output gradient; glue code between blocks is not timed;
- memory: bytes saved for backward per micro-batch (activations, counted with
  `torch.autograd.graph.saved_tensors_hooks` during the real forward, parameters
  excluded) and a peak estimate = parameters + gradients + activations x the micro-batches
  the schedule keeps in flight on that stage (GPipe: m; 1F1B: min(m, p - stage));

the batch fields each pipeline rank receives (those whose `placement_idx` names it, see
`libai.data.placement`) and their bytes per micro-batch; and the bubble fraction (p-1)/(m+p-1) of m = num_accumulation_steps micro-batches (batch
sizes resolved with data_parallel_size = 1), the bubble the measured stage times imply, the
slowest/fastest stage ratio, and the `custom_pipeline_stage_id` that balances the measured
times best (optimal contiguous split of the layers).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

# Configs import `projects.*` and `tests.*` relative to the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

# Pipeline layers of the one-process mesh the model is built on: with one process every
# layer is on stage 0, so any count >= the model's works; the configured count is checked
# against the model's layer_idx afterwards, with a clear error.
_PROVISIONAL_NUM_LAYERS = 4096


class ReportError(ValueError):
    """A config or model the report cannot handle (printed as one `error:` line)."""


@dataclass
class Unit:
    """A module the report times: a pipeline block, or a top-level module outside blocks."""

    name: str
    module: nn.Module
    layer: int  # layer index in [0, num_layers); modules outside blocks: the last layer
    is_block: bool
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    params: int = 0
    param_bytes: int = 0
    saved_bytes: int = 0
    fwd_ms: float = 0.0
    bwd_ms: float = 0.0
    stage: int = 0


# --------------------------------------------------------------------------------------
# Setup: config, one-process mesh, model, one micro-batch
# --------------------------------------------------------------------------------------


def load_config(path: str, overrides: Sequence[str]):
    """`LazyConfig.load(path)` with `key=value` overrides applied."""
    from libai.config import LazyConfig

    cfg = LazyConfig.load(path)
    try:
        return LazyConfig.apply_overrides(cfg, list(overrides))
    except ValueError as err:  # a malformed override is the user's, not a bug
        raise ReportError(str(err)) from err


def pipeline_settings(cfg) -> dict[str, Any]:
    """The configured pipeline layout: pp, num_layers (None = the model's), custom ids, schedule."""
    from libai.config import try_get_key

    pp = int(try_get_key(cfg, "train.dist.pipeline_parallel_size", default=1) or 1)
    if pp < 1:
        raise ReportError(f"train.dist.pipeline_parallel_size must be >= 1, got {pp}")
    num_layers = try_get_key(cfg, "train.dist.pipeline_num_layers", default=None)
    custom = try_get_key(cfg, "train.dist.custom_pipeline_stage_id", default=None)
    schedule = try_get_key(cfg, "train.pipeline.schedule", default="1F1B") or "1F1B"
    from libai.engine.pipeline import SCHEDULES

    if schedule not in SCHEDULES:
        raise ReportError(f"train.pipeline.schedule={schedule!r} is unknown: use one of {sorted(SCHEDULES)}")
    return dict(
        pp=pp,
        num_layers=None if num_layers is None else int(num_layers),
        custom=None if custom is None else [int(s) for s in custom],
        schedule=schedule,
    )


def setup_one_process(cfg) -> int:
    """One-process gloo group and a dp=tp=pp=1 mesh on the CPU; batch sizes with dp=1.

    Returns m, the number of micro-batches per step (`num_accumulation_steps`).
    """
    from libai.engine.default import resolve_batch_sizes, seed_all
    from libai.utils import distributed as dist

    os.environ.pop("RANK", None)  # a plain one-process group even when started by a launcher
    dist.setup_dist_util(
        dict(
            data_parallel_size=1,
            tensor_parallel_size=1,
            pipeline_parallel_size=1,
            pipeline_num_layers=_PROVISIONAL_NUM_LAYERS,
        ),
        device="cpu",
    )
    resolve_batch_sizes(cfg.train, 1)
    seed_all(int(cfg.train.get("seed", 0) or 0))
    return int(cfg.train.num_accumulation_steps)


def build_model_and_batch(cfg) -> tuple[nn.Module, dict, Any]:
    """The config's model (train mode, activation checkpointing as configured), one
    micro-batch from its train loader as the trainer's `get_batch` hands it over (on one
    process every field is placed), and the loader's batch itself."""
    from libai.config import try_get_key
    from libai.engine.default import DefaultTrainer
    from libai.layers import enable_activation_checkpointing

    if try_get_key(cfg, "model", default=None) is None:
        raise ReportError("the config has no `model`")
    if try_get_key(cfg, "dataloader.train", default=None) is None:
        raise ReportError("the config has no `dataloader.train`: the report times one of its micro-batches")
    model = DefaultTrainer.build_model(cfg)
    model.train()
    if try_get_key(cfg, "train.activation_checkpoint.enabled", default=False):
        enable_activation_checkpointing(model)
    loader = DefaultTrainer.build_train_loader(cfg)[0]
    data = next(iter(loader))
    batch = DefaultTrainer.get_batch(data, "cpu")
    return model, batch, data


def fields_per_rank(data: Any, p: int) -> list[dict[str, int]]:
    """For each pipeline rank, {field: bytes per micro-batch} of the batch fields it
    receives: a `DistTensorData` only on the stage its `placement_idx` names, any other
    tensor on every stage."""
    from libai.data.placement import is_placed_on
    from libai.data.structures import DistTensorData, Instance

    fields = data.get_fields() if isinstance(data, Instance) else data
    received: list[dict[str, int]] = [{} for _ in range(p)]
    for name, value in fields.items():
        tensor = value.tensor if isinstance(value, DistTensorData) else value
        if not isinstance(tensor, torch.Tensor):
            continue
        for rank in range(p):
            placed = not isinstance(value, DistTensorData) or is_placed_on(value.check().placement_idx, rank, p)
            if placed:
                received[rank][name] = tensor.numel() * tensor.element_size()
    return received


# --------------------------------------------------------------------------------------
# Stage map
# --------------------------------------------------------------------------------------


def stage_map(settings: dict, num_layers: int) -> tuple[list[int], int]:
    """(stage of each layer, number of virtual stages per pipeline rank)."""
    from libai.utils.distributed import get_layer_stage_ids

    pp = settings["pp"]
    if settings["schedule"] == "Interleaved1F1B":
        # libai.engine.pipeline.layer_stage_map: 2 x pp virtual stages, LiBai's rule.
        return get_layer_stage_ids(num_layers, 2 * pp), 2
    return get_layer_stage_ids(num_layers, pp, settings["custom"]), 1


def collect_units(model: nn.Module, num_layers: Optional[int]) -> tuple[list[Unit], int]:
    """The blocks (`find_blocks`) and the other top-level modules, and the layer count."""
    from libai.engine.pipeline import find_blocks

    blocks = find_blocks(model)
    if num_layers is None:
        num_layers = max(idx if idx >= 0 else -idx - 1 for _, _, idx in blocks) + 1
    units = []
    for name, module, idx in blocks:
        if not -num_layers <= idx < num_layers:
            raise ReportError(
                f"module {name!r} has layer_idx={idx} but train.dist.pipeline_num_layers is "
                f"{num_layers}: set pipeline_num_layers to the model's number of layers"
            )
        units.append(Unit(name, module, idx % num_layers, True))
    block_names = [u.name for u in units]
    for name, child in model.named_children():
        # Top-level modules that are not blocks and hold none (LM head, loss) run on the
        # last stage, where the pipeline engine puts everything outside blocks.
        if name in block_names or any(b.startswith(name + ".") for b in block_names):
            continue
        units.append(Unit(name, child, num_layers - 1, False))
    return units, num_layers


def count_parameters(model: nn.Module, units: list[Unit]) -> None:
    """Fill `params`/`param_bytes` per unit; a shared weight counts for its first owner,
    parameters outside every unit count for the last unit (the last stage)."""
    seen: set[int] = set()
    for unit in units:
        for p in unit.module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                unit.params += p.numel()
                unit.param_bytes += p.numel() * p.element_size()
    last = max(units, key=lambda u: u.layer)
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            last.params += p.numel()
            last.param_bytes += p.numel() * p.element_size()


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


def _param_storages(model: nn.Module) -> set[int]:
    return {_local(p).untyped_storage().data_ptr() for p in model.parameters()}


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def record_forward(model: nn.Module, units: list[Unit], batch: dict) -> tuple[float, float]:
    """Run one real forward + backward of the micro-batch: capture every unit's inputs and
    the activation bytes saved for backward while it (or the glue after it) runs.

    Returns the whole model's (forward ms, backward ms) of that run.
    """
    params = _param_storages(model)
    seen: set[int] = set()
    current: list[Optional[Unit]] = [None]
    handles = []

    def pre_hook(unit):
        def hook(module, args, kwargs):
            if not unit.args and not unit.kwargs:  # first call: the one we replay
                unit.args, unit.kwargs = args, kwargs
            current[0] = unit

        return hook

    for unit in units:
        handles.append(unit.module.register_forward_pre_hook(pre_hook(unit), with_kwargs=True))

    def pack(t: torch.Tensor):
        storage = _local(t).untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen and current[0] is not None:
            seen.add(ptr)
            # Glue after a unit (adds, reshapes) runs on that unit's stage.
            current[0].saved_bytes += storage.nbytes()
        return t

    try:
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            output = model(**batch)
        fwd = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
    loss = _total_loss(output)
    start = time.perf_counter()
    loss.backward()
    bwd = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return fwd * 1e3, bwd * 1e3


def _total_loss(output: Any) -> torch.Tensor:
    if not isinstance(output, dict):
        raise ReportError(f"the model returned {type(output).__name__}; the trainer needs a dict of losses")
    losses = [v for k, v in output.items() if "loss" in k]
    if not losses:
        raise ReportError(f"the model's output has keys {sorted(output)} and none contains 'loss'")
    return sum(_local(v).sum() for v in losses)


def _fresh_inputs(value: Any) -> Any:
    """A detached copy of a unit's recorded input (a leaf, requiring grad like the original)."""
    if isinstance(value, torch.Tensor):
        t = _local(value).detach()
        return t.requires_grad_(value.requires_grad and t.is_floating_point())
    if isinstance(value, (tuple, list)):
        return type(value)(_fresh_inputs(v) for v in value)
    if isinstance(value, dict):
        return {k: _fresh_inputs(v) for k, v in value.items()}
    return value


def _grad_outputs(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        value = _local(value)
        return [value] if value.requires_grad else []
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _grad_outputs(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _grad_outputs(v)]
    return []


def time_unit(unit: Unit, repeats: int) -> None:
    """Median forward and backward time of the unit replayed alone on its recorded input."""
    fwd, bwd = [], []
    gen = torch.Generator().manual_seed(0)
    for i in range(repeats + 1):  # the first run warms up allocator and kernels
        args, kwargs = _fresh_inputs(unit.args), _fresh_inputs(unit.kwargs)
        start = time.perf_counter()
        out = unit.module(*args, **kwargs)
        mid = time.perf_counter()
        outs = _grad_outputs(out)
        grads = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in outs]
        mid2 = time.perf_counter()
        if outs:
            torch.autograd.backward(outs, grads)
        end = time.perf_counter()
        unit.module.zero_grad(set_to_none=True)
        if i:
            fwd.append(mid - start)
            bwd.append(end - mid2)
    unit.fwd_ms = statistics.median(fwd) * 1e3
    unit.bwd_ms = statistics.median(bwd) * 1e3


# --------------------------------------------------------------------------------------
# Pipeline arithmetic
# --------------------------------------------------------------------------------------


def bubble_fraction(p: int, m: int, v: int = 1) -> float:
    """Idle fraction of a balanced (interleaved) 1F1B/GPipe step: (p-1)/(v*m + p-1)."""
    return (p - 1) / (v * m + p - 1)


def measured_bubble(stage_ms: Sequence[float], m: int) -> float:
    """Bubble implied by unbalanced stage times: the slowest stage sets the pace, so a step
    takes about (m + p - 1) x max(t) while stage s is busy m x t_s."""
    p, slowest = len(stage_ms), max(stage_ms)
    if slowest <= 0:
        return 0.0
    return 1.0 - m * (sum(stage_ms) / p) / ((m + p - 1) * slowest)


def in_flight(schedule: str, stage: int, p: int, m: int, v: int) -> int:
    """Micro-batches whose activations a stage holds at once under `schedule`."""
    if schedule == "GPipe":
        return m
    if schedule == "Interleaved1F1B":
        rank = stage % p
        # torch's interleaved warm-up: (v-1) rounds of p chunks + 2 per hop to the last rank.
        return min((v - 1) * p + 2 * (p - 1 - rank) + 1, m * v) // v or 1
    return min(m, p - stage)


def balanced_split(costs: Sequence[float], p: int) -> list[int]:
    """Stage id per layer of the contiguous split of `costs` into `p` non-empty stages that
    minimises the slowest stage (dynamic programming; layer counts are small)."""
    n = len(costs)
    if p > n:
        raise ReportError(f"cannot split {n} layers into {p} non-empty stages")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][i]: smallest max-stage cost of the first i layers in k stages.
    best = [[inf] * (n + 1) for _ in range(p + 1)]
    cut = [[0] * (n + 1) for _ in range(p + 1)]
    best[0][0] = 0.0
    for k in range(1, p + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i]:
                    best[k][i], cut[k][i] = value, j
    ids, i = [0] * n, n
    for k in range(p, 0, -1):
        j = cut[k][i]
        ids[j:i] = [k - 1] * (i - j)
        i = j
    return ids


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def build_report(config: str, overrides: Sequence[str], repeats: int) -> dict:
    """Measure everything and return the report as plain data."""
    cfg = load_config(config, overrides)
    settings = pipeline_settings(cfg)
    m = setup_one_process(cfg)
    model, batch, data = build_model_and_batch(cfg)
    units, num_layers = collect_units(model, settings["num_layers"])
    stage_ids, v = stage_map(settings, num_layers)
    p = settings["pp"]
    num_stages = p * v
    count_parameters(model, units)
    record_forward(model, units, batch)
    # The whole model, warm, for comparison with the sum of the blocks (glue included).
    whole = [record_forward(model, [], batch) for _ in range(repeats)]
    whole_fwd = statistics.median(w[0] for w in whole)
    whole_bwd = statistics.median(w[1] for w in whole)
    torch.manual_seed(0)
    for unit in units:
        unit.stage = stage_ids[unit.layer]
        time_unit(unit, repeats)
    stages = []
    for s in range(num_stages):
        mine = [u for u in units if u.stage == s]
        layers = [i for i, sid in enumerate(stage_ids) if sid == s]
        if not layers:
            raise ReportError(f"pipeline stage {s} owns no layer: lower pipeline_parallel_size or fix custom_pipeline_stage_id")
        param_bytes = sum(u.param_bytes for u in mine)
        act = sum(u.saved_bytes for u in mine)
        flight = in_flight(settings["schedule"], s, p, m, v)
        stages.append(
            dict(
                stage=s,
                rank=s % p,
                layers=[layers[0], layers[-1]],
                blocks=[u.name for u in mine],
                params=sum(u.params for u in mine),
                param_bytes=param_bytes,
                fwd_ms=sum(u.fwd_ms for u in mine),
                bwd_ms=sum(u.bwd_ms for u in mine),
                act_bytes=act,
                in_flight=flight,
                # parameters + their gradients + the activations of the in-flight micro-batches
                peak_bytes=2 * param_bytes + flight * act,
            )
        )
    stage_ms = [st["fwd_ms"] + st["bwd_ms"] for st in stages]
    layer_ms = [0.0] * num_layers
    for u in units:
        layer_ms[u.layer] += u.fwd_ms + u.bwd_ms
    hint = balanced_split(layer_ms, p)
    hint_ms = [sum(c for c, sid in zip(layer_ms, hint) if sid == s) for s in range(p)]
    return dict(
        config=config,
        model=type(model).__name__,
        total_params=sum(x.numel() for x in model.parameters()),
        num_layers=num_layers,
        pipeline_parallel_size=p,
        virtual_stages=v,
        schedule=settings["schedule"],
        stage_ids=list(stage_ids),
        micro_batch_size=int(cfg.train.train_micro_batch_size),
        num_microbatches=m,
        inputs={k: list(t.shape) for k, t in batch.items() if isinstance(t, torch.Tensor)},
        fields_per_rank=fields_per_rank(data, p),
        repeats=repeats,
        whole_fwd_ms=whole_fwd,
        whole_bwd_ms=whole_bwd,
        units=[
            dict(name=u.name, layer=u.layer, stage=u.stage, block=u.is_block, params=u.params,
                 fwd_ms=u.fwd_ms, bwd_ms=u.bwd_ms, act_bytes=u.saved_bytes)
            for u in units
        ],
        stages=stages,
        bubble_theory=bubble_fraction(p, m, v),
        bubble_measured_times=measured_bubble(stage_ms, m * v) if num_stages > 1 else 0.0,
        slowest_fastest=max(stage_ms) / max(min(stage_ms), 1e-9),
        hint_stage_ids=hint,
        hint_slowest_fastest=max(hint_ms) / max(min(hint_ms), 1e-9),
    )


def _mb(n: float) -> str:
    return f"{n / 2**20:.3f}"


def format_report(r: dict) -> str:
    """The human-readable report."""
    p, m, v = r["pipeline_parallel_size"], r["num_microbatches"], r["virtual_stages"]
    inputs = ", ".join(f"{k}{v_}" for k, v_ in r["inputs"].items())
    lines = [
        f"pipeline report: {r['config']}",
        f"model {r['model']}: {r['total_params']} parameters, {r['num_layers']} pipeline layers, "
        f"pipeline_parallel_size={p}, schedule {r['schedule']}"
        + (f" ({v} virtual stages per rank)" if v > 1 else ""),
        f"layer -> stage: {r['stage_ids']}",
        f"micro-batch: {r['micro_batch_size']} samples ({inputs}); m = num_accumulation_steps = {m} "
        f"micro-batches per step (data_parallel_size=1)",
        f"times: median of {r['repeats']} replays of each block alone, 1 process, "
        f"{torch.get_num_threads()} thread(s); whole model fwd {r['whole_fwd_ms']:.2f} ms, "
        f"bwd {r['whole_bwd_ms']:.2f} ms (median, glue included)",
        "",
        f"{'stage':>5} {'rank':>4} {'layers':>7} {'params':>10} {'fwd_ms':>8} {'bwd_ms':>8} "
        f"{'act_MB/mb':>10} {'in_flight':>9} {'peak_MB':>9}  blocks",
    ]
    for st in r["stages"]:
        first, last = st["layers"]
        layers = f"{first}-{last}" if last != first else f"{first}"
        lines.append(
            f"{st['stage']:>5} {st['rank']:>4} {layers:>7} {st['params']:>10} {st['fwd_ms']:>8.3f} "
            f"{st['bwd_ms']:>8.3f} {_mb(st['act_bytes']):>10} {st['in_flight']:>9} "
            f"{_mb(st['peak_bytes']):>9}  {', '.join(st['blocks'])}"
        )
    lines.append(f"{'total':>5} {'':>4} {'':>7} {sum(s['params'] for s in r['stages']):>10}")
    lines += ["", "batch fields each pipeline rank receives (bytes per micro-batch; placement_idx decides):"]
    for rank, fields in enumerate(r["fields_per_rank"]):
        listed = ", ".join(f"{name} {size}" for name, size in fields.items()) or "none"
        lines.append(f"  rank {rank}: {listed} (total {sum(fields.values())})")
    lines += [
        "",
        "peak_MB = parameters + gradients + act_MB/mb x in_flight (micro-batches whose activations "
        "the schedule keeps at once)",
        f"bubble (theory, balanced stages) = (p-1)/({'v*' if v > 1 else ''}m+p-1) = "
        f"{p - 1}/{v * m + p - 1} = {r['bubble_theory']:.4f}",
        f"bubble (measured stage times)    = {r['bubble_measured_times']:.4f}",
        f"slowest/fastest stage (fwd+bwd)  = {r['slowest_fastest']:.3f}",
        f"balance hint: train.dist.custom_pipeline_stage_id={r['hint_stage_ids']} "
        f"(slowest/fastest {r['hint_slowest_fastest']:.3f})",
    ]
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line: CONFIG, options, then `key=value` overrides."""
    parser = argparse.ArgumentParser(
        description="Per-stage layers, parameters, forward/backward time, memory and bubble of a "
        "pipeline layout (runs in one process)."
    )
    parser.add_argument("config", help="a LiBai config file (.py/.yaml)")
    parser.add_argument("--repeats", type=int, default=10, help="timed replays per block (median)")
    parser.add_argument("--json", default="", help="also write the report as JSON to this file")
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    # Intermixed: options may come after the overrides too.
    args = parser.parse_intermixed_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the report; user errors print one `error: ...` line and exit with status 2."""
    from libai.config import ConfigKeyError
    from libai.engine.default import BatchSizeError
    from libai.engine.pipeline import PipelineError
    from libai.utils.distributed import DistLayoutError

    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    try:
        report = build_report(args.config, args.opts, args.repeats)
    except (ReportError, ConfigKeyError, DistLayoutError, BatchSizeError, PipelineError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(format_report(report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
