#!/usr/bin/env python
"""Measured pipeline bubble of 1F1B vs the theoretical (p-1)/(m+p-1).

p gloo processes (one per pipeline stage, `OMP_NUM_THREADS=1`) train a stack of equal
blocks (residual MLPs, `layer_idx` 0..L-1, the same number per stage) with
`libai.engine.pipeline.build_pipeline(..., "1F1B")` over m micro-batches. On every rank the
stage's `forward_one_chunk` / `backward_one_chunk` (the compute of one micro-batch; the
schedule's receives and sends happen outside them) are timed, and each step is timed
between two barriers. Per rank and step

    bubble = 1 - busy / wall

(busy = forward + backward compute of that rank), averaged over ranks, median over the
timed steps. `step/ideal` is the step time over the ideal 1F1B step with the measured
stage times t_s (one stage's forward+backward of one micro-batch):

    ideal = sum_s t_s + (m - 1) x max_s t_s

(the pipeline fills once, then the slowest stage paces the other m - 1 micro-batches):
what the schedule's communication and bookkeeping add on the critical path. The stages
are not quite equal even with equal blocks: the first stage computes no gradient for its
input, ~8% less backward work here, so the older measure (m+p-1) x mean_s t_s, printed
beside it, charges that difference to the schedule. Two busy clocks are reported: wall-clock time inside the compute calls, and
the thread's CPU time there (`time.thread_time`), which excludes time the OS gave the core
to another process. With more processes than cores the two differ: see the note printed
with the table.

Where p <= cores, rank r is pinned to core r (`os.sched_setaffinity`, before the process
group starts so gloo's threads stay there too), as each stage would have its own GPU:
unpinned, the OS sometimes runs both stages' threads on one core for a while, which adds
3-4% to the median step on 2 cores (1.04-1.08 unpinned against 1.02-1.04 pinned, same
code); `--no-pin-cores` turns it off.

    OMP_NUM_THREADS=1 python benchmarks/pipeline_bubble.py [--pp 2 4 --micro-batches 4 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from tests.helpers.dist import run_on_ranks  # noqa: E402


class Block(nn.Module):
    """A residual MLP: the same compute-bound cost for every block (no sleeps)."""

    def __init__(self, hidden: int, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class Net(nn.Module):
    """`layers` equal blocks and an MSE loss (no parameters outside the blocks, so the
    last stage does no extra work apart from a cheap loss)."""

    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(hidden, i) for i in range(layers)])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        for block in self.blocks:
            x = block(x)
        return {"loss": torch.nn.functional.mse_loss(x, y)}


def _timed(fn, clock: dict):
    """Wrap a stage method so the wall and CPU time spent inside it are added to `clock`."""

    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            clock["wall"] += time.perf_counter() - wall
            clock["cpu"] += time.thread_time() - cpu

    return wrapper


def worker(
    pp: int, micro_batches: list[int], hidden: int, blocks_per_stage: int, rows: int, steps: int, pin_cores: bool
) -> list:
    """On one rank: for each m, time `steps` 1F1B steps; return [(m, [(busy_wall, busy_cpu, wall)])]."""
    import torch.distributed as torch_dist

    from libai.engine.pipeline import build_pipeline
    from libai.utils import distributed as dist

    layers = pp * blocks_per_stage
    if pin_cores:
        # Before the process group starts, so that gloo's threads inherit the core too.
        os.sched_setaffinity(0, {int(os.environ["RANK"])})
    dist.setup_dist_util(dict(pipeline_parallel_size=pp, pipeline_num_layers=layers), device="cpu")
    out = []
    for m in micro_batches:
        torch.manual_seed(0)
        model = Net(hidden, layers)
        engine = build_pipeline(model, m, "1F1B")
        clock = {"wall": 0.0, "cpu": 0.0}
        stage = engine.stages[0]
        stage.forward_one_chunk = _timed(stage.forward_one_chunk, clock)
        stage.backward_one_chunk = _timed(stage.backward_one_chunk, clock)
        batch = {"x": torch.randn(m * rows, hidden), "y": torch.randn(m * rows, hidden)}
        samples = []
        for step in range(steps + 2):  # two warm-up steps
            clock.update(wall=0.0, cpu=0.0)
            torch_dist.barrier()
            start = time.perf_counter()
            engine.step(batch)
            for p in engine.parameters():
                p.grad = None
            torch_dist.barrier()
            wall = time.perf_counter() - start
            if step >= 2:
                samples.append((clock["wall"], clock["cpu"], wall))
        out.append((m, samples))
    return out


def summarise(results: list, pp: int) -> list[dict]:
    """Per m: theory and measured bubbles (mean over ranks of the per-step median)."""
    rows = []
    for i, (m, _) in enumerate(results[0]):
        per_rank_wall, per_rank_cpu, step_ms, busy_ms = [], [], [], []
        for rank_result in results:
            samples = rank_result[i][1]
            per_rank_wall.append(statistics.median(1 - b / w for b, _, w in samples))
            per_rank_cpu.append(statistics.median(1 - c / w for _, c, w in samples))
            step_ms.append(statistics.median(w for _, _, w in samples) * 1e3)
            busy_ms.append(statistics.median(b for b, _, _ in samples) * 1e3 / m)
        rows.append(
            dict(
                pp=pp,
                m=m,
                theory=(pp - 1) / (m + pp - 1),
                measured_wall=statistics.mean(per_rank_wall),
                measured_cpu=statistics.mean(per_rank_cpu),
                step_ms=max(step_ms),
                stage_mb_ms=statistics.mean(busy_ms),
                ideal_ms=sum(busy_ms) + (m - 1) * max(busy_ms),
                per_rank_wall=per_rank_wall,
            )
        )
    return rows


def main() -> None:
    """Run every (p, m) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pp", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--micro-batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--blocks-per-stage", type=int, default=2)
    parser.add_argument("--rows", type=int, default=256, help="rows per micro-batch")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per (p, m)")
    parser.add_argument(
        "--no-pin-cores", dest="pin_cores", action="store_false",
        help="let the OS place the stage processes (default: rank r on core r when p <= cores)",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(
        f"1F1B bubble: {args.blocks_per_stage} residual-MLP blocks per stage (hidden {args.hidden}, "
        f"{args.rows} rows per micro-batch), gloo on {cores} CPU cores, OMP_NUM_THREADS=1, "
        f"median of {args.steps} steps after 2 warm-up steps, "
        f"{'rank r pinned to core r where p <= cores' if args.pin_cores else 'processes not pinned'}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (other jobs on the cores inflate the bubble)")
    print(
        f"{'p':>2} {'m':>3} {'theory':>7} {'meas(wall)':>10} {'meas(cpu)':>9} {'step_ms':>8} "
        f"{'stage f+b ms/mb':>15} {'step/ideal':>10} {'(mean-stage ideal)':>18}  per-rank bubble (wall)"
    )
    for pp in args.pp:
        pin = args.pin_cores and pp <= cores and hasattr(os, "sched_setaffinity")
        results = run_on_ranks(
            worker, pp, pp, args.micro_batches, args.hidden, args.blocks_per_stage, args.rows, args.steps, pin
        )
        for row in summarise(results, pp):
            ranks = " ".join(f"{b:.3f}" for b in row["per_rank_wall"])
            flag = "  (oversubscribed)" if pp > cores else ""
            print(
                f"{row['pp']:>2} {row['m']:>3} {row['theory']:>7.3f} {row['measured_wall']:>10.3f} "
                f"{row['measured_cpu']:>9.3f} {row['step_ms']:>8.1f} {row['stage_mb_ms']:>15.2f} "
                f"{row['step_ms'] / row['ideal_ms']:>10.3f} "
                f"{row['step_ms'] / ((row['m'] + pp - 1) * row['stage_mb_ms']):>18.3f}  "
                f"{ranks}{flag}",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if any(pp > cores for pp in args.pp):
        print(
            f"note: p > {cores} cores means several stages share a core. A stage's compute is then "
            f"stretched by the OS (wall busy includes time spent waiting for the core), and the CPU "
            f"clock undercounts how long the stage kept its successor waiting, so neither "
            f"measured bubble for those p is the schedule's bubble: they mix the 1F1B bubble with "
            f"time-slicing. Only the rows with p <= {cores} measure the schedule."
        )


if __name__ == "__main__":
    main()
