#!/usr/bin/env python
"""Per-rank bytes of parameters + gradients + optimizer state under ZeRO stage 0/1/2/3.

Four gloo processes, data parallel 4, train a stack of transformer-sized MLP blocks
(`TransformerLayer`: LayerNorm, Linear h->4h, GELU, Linear 4h->h, residual) with AdamW.
Stage 0 is the trainer's plain data parallelism (`GradientReducer`); stages 1-3 are
`libai.utils.zero.apply_zero`. During the second step the script takes a snapshot after
every forward, every backward, the gradient reduction and the optimizer step, and counts
the distinct tensor storages alive in each category:

- params: every parameter storage (FSDP2's shards and, while gathered, the full
  parameters), grads: `.grad` storages (sharded and unsharded), optim: optimizer state,
- buffers: gradient-reduction buffers (GradientReducer's float64 sum, FSDP2's float64
  accumulation of unsharded gradients, ZeRO's float64 sum of gradient shards).

"step end" is params + grads + optim after `optimizer.step()` (before `zero_grad`): the
state a step carries. "peak" is the largest snapshot of all four categories together.
Required: stage 3 step-end bytes <= 1.15 x (stage 0 step-end bytes) / 4.

    OMP_NUM_THREADS=1 python benchmarks/zero_memory.py [--hidden 256 --layers 8 --micro-batches 1]
"""
from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from tests.helpers.dist import run_on_ranks  # noqa: E402

WORLD = 4
CATEGORIES = ("params", "grads", "optim", "buffers")


class TransformerLayer(nn.Module):
    """A transformer block's parameters without attention (its size is what matters here)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


class Net(nn.Module):
    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Linear(hidden, hidden)
        self.layers = nn.ModuleList([TransformerLayer(hidden) for _ in range(layers)])
        self.final_norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> dict:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return {"loss": torch.nn.functional.mse_loss(self.final_norm(h), target)}


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t._local_tensor if isinstance(t, DTensor) else t


def _tensors_by_category(model: nn.Module, optimizer, reducer) -> dict[str, list[torch.Tensor]]:
    from torch.distributed.fsdp import FSDPModule

    from libai.utils.distributed import GradientReducer

    cats: dict[str, list] = {c: [] for c in CATEGORIES}
    for p in model.parameters():
        cats["params"].append(p)
        if p.grad is not None:
            cats["grads"].append(p.grad)
    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        for group in module._get_fsdp_state()._fsdp_param_groups:
            for fp in group.fsdp_params:
                cats["params"].append(fp._sharded_param_data)
                cats["params"].extend(getattr(fp, "all_gather_outputs", None) or [])
                if fp.sharded_param.grad is not None:
                    cats["grads"].append(fp.sharded_param.grad)
                unsharded = getattr(fp, "_unsharded_param", None)
                if unsharded is not None:
                    cats["params"].append(unsharded)
                    if unsharded.grad is not None:
                        cats["grads"].append(unsharded.grad)
                if fp.unsharded_accumulated_grad is not None:
                    cats["buffers"].append(fp.unsharded_accumulated_grad)
    for state in optimizer.state.values():
        cats["optim"].extend(v for v in state.values() if isinstance(v, torch.Tensor))
    if isinstance(reducer, GradientReducer):
        cats["buffers"].append(reducer.buffer)
    elif reducer is not None:
        cats["buffers"].extend(t for t in reducer._partial.values() if t is not None)
    return cats


def snapshot(model: nn.Module, optimizer, reducer) -> dict[str, int]:
    """Bytes of distinct live storages per category (a storage counts once, first category wins)."""
    seen: set[int] = set()
    out = {}
    for cat, tensors in _tensors_by_category(model, optimizer, reducer).items():
        total = 0
        for t in tensors:
            storage = _local(t).untyped_storage()
            if storage.nbytes() == 0 or storage.data_ptr() in seen:
                continue  # freed (resized to 0) or already counted
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        out[cat] = total
    return out


def _measure(stage: int, hidden: int, layers: int, micro_batches: int, reduce_dtype: str) -> dict:
    """Train two steps under `stage`; snapshots of the second step."""
    from libai.utils import distributed as dist
    from libai.utils.distributed import clip_grad_norm_
    from libai.utils.zero import apply_zero

    torch.manual_seed(0)
    model = Net(hidden, layers)
    num_params = sum(p.numel() for p in model.parameters())
    if stage == 0:
        reducer = dist.GradientReducer(model.parameters(), micro_batches)
    else:
        model, reducer = apply_zero(model, stage, micro_batches, reduce_dtype=getattr(torch, reduce_dtype))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(dist.get_rank())
    snaps: list[dict] = []

    def take(label: str) -> None:
        snaps.append({"at": label, **snapshot(model, optimizer, reducer)})

    for _ in range(2):
        snaps.clear()
        for micro in range(micro_batches):
            x = torch.randn(4, hidden, generator=gen)
            loss = model(x, x)["loss"]
            take(f"forward {micro}")
            loss.backward()
            reducer.accumulate()
            take(f"backward {micro}")
        reducer.reduce()
        take("reduced")
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        take("step end")
        optimizer.zero_grad(set_to_none=True)
    peak = max(snaps, key=lambda s: sum(s[c] for c in CATEGORIES))
    return {"num_params": num_params, "end": snaps[-1], "peak": peak}


def _worker(hidden: int, layers: int, micro_batches: int, reduce_dtype: str) -> dict:
    from libai.utils import distributed as dist

    dist.setup_dist_util({"data_parallel_size": WORLD}, device="cpu")
    return {stage: _measure(stage, hidden, layers, micro_batches, reduce_dtype) for stage in (0, 1, 2, 3)}


def run(args) -> dict:
    """Per stage, the bytes of the rank with the most (FSDP2 pads shards, so ranks differ)."""
    per_rank = run_on_ranks(_worker, WORLD, args.hidden, args.layers, args.micro_batches, args.reduce_dtype)
    total = lambda s, cats: sum(s[c] for c in cats)  # noqa: E731
    results = {}
    for stage in (0, 1, 2, 3):
        runs = [r[stage] for r in per_rank]
        worst = max(runs, key=lambda r: total(r["end"], CATEGORIES[:3]))
        worst_peak = max(runs, key=lambda r: total(r["peak"], CATEGORIES))
        results[stage] = {"num_params": worst["num_params"], "end": worst["end"], "peak": worst_peak["peak"]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--micro-batches", type=int, default=1)
    parser.add_argument("--reduce-dtype", default="float64", choices=["float64", "float32"])
    args = parser.parse_args()
    results = run(args)
    mib = 1 / 2**20
    num_params = results[0]["num_params"]
    print(
        f"ZeRO memory, {WORLD} ranks (dp={WORLD}), {num_params / 1e6:.2f}M fp32 parameters, AdamW, "
        f"{args.micro_batches} micro-batch(es), reduce dtype {args.reduce_dtype}; MiB per rank"
    )
    print("| stage | params | grads | optim | step end (p+g+o) | / stage 0 | peak (+buffers) | peak at |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base = sum(results[0]["end"][c] for c in CATEGORIES[:3])
    for stage, res in results.items():
        end, peak = res["end"], res["peak"]
        end_total = sum(end[c] for c in CATEGORIES[:3])
        peak_total = sum(peak[c] for c in CATEGORIES)
        print(
            f"| {stage} | {end['params'] * mib:.2f} | {end['grads'] * mib:.2f} | {end['optim'] * mib:.2f} | "
            f"{end_total * mib:.2f} | {end_total / base:.3f} | {peak_total * mib:.2f} | {peak['at']} |"
        )
    stage3 = sum(results[3]["end"][c] for c in CATEGORIES[:3])
    ratio = stage3 / (base / WORLD)
    verdict = "PASS" if ratio <= 1.15 else "FAIL"
    print(f"stage 3 / (stage 0 / {WORLD}) = {ratio:.3f} (required <= 1.15): {verdict}")
    if verdict == "FAIL":
        sys.exit(1)


if __name__ == "__main__":
    main()
