#!/usr/bin/env python
"""Data-parallel GPT training on 2 gloo processes: LiBai's DefaultTrainer vs PyTorch DDP.

Both sides train the GPT of benchmarks/gpt_throughput.py (4 layers, hidden 256, sequence
128, vocabulary 8192, micro batch 8 per rank, one thread per process), dp = 2:

* trainer: `GPTForPreTraining` from LiBai's config, trained by `DefaultTrainer` (global
  batch 16 = 2 x 8, default hooks), its gradients averaged by the default bucketed
  reducer or, in the "exact" mode, by the float64 one (`train.dist.exact_reduction=True`);
* ddp: the script's independent `PlainGPT` wrapped in
  `torch.nn.parallel.DistributedDataParallel`, same AdamW, clipping and LR schedule, in
  gpt_throughput.py's hand-written loop (which reads the loss every step).

After warm-up steps, rounds alternate trainer / ddp / ddp / trainer ... (`--rounds`
rounds of `--steps` steps each side), on both ranks in the same order. Rank 0 prints per
mode the median tokens/s of each side and `ratio trainer/ddp = X`, the median over rounds
of the paired ratio, with PASS when the default mode's is >= 1.0 (exit status 0 either way).

    OMP_NUM_THREADS=1 python benchmarks/ddp_comparison.py [--steps 6 --rounds 5 --warmup 3]

Run plainly, the script launches itself on 2 processes with torchrun.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import gpt_throughput as gpt  # noqa: E402
from libai.utils import distributed as dist  # noqa: E402
from libai.utils.events import EventStorage  # noqa: E402

SHAPE = gpt.Shape(layers=4, hidden=256, heads=4, seq=128, vocab=8192, batch=8)
MODES = {"default": False, "exact": True}  # mode -> train.dist.exact_reduction


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    return parser.parse_args()


def launch_on_two_processes() -> None:
    """Run this script again under torchrun, 2 processes of one thread each."""
    from tests.helpers.dist import free_port

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), os.path.abspath(__file__), *sys.argv[1:]]
    raise SystemExit(subprocess.call(cmd, env=env))


def build_ddp(trainer) -> gpt.PlainRun:
    """The DDP side with the trainer's hyperparameters and tokens; each rank draws its own rows."""
    run, _ = gpt.build_plain(SHAPE, trainer, compiled=False)
    run.model = DistributedDataParallel(run.model)
    run.generator.manual_seed(1000 + dist.get_rank())
    return run


def measure(args: argparse.Namespace, exact: bool, output_dir: str) -> dict[str, list[float]]:
    """Seconds per round of each side (the trainer built with `exact`)."""
    total_iters = args.warmup + args.rounds * args.steps + 1
    cfg = gpt.build_config(SHAPE, output_dir, total_iters, compiled=False, device="cpu")
    gpt.merge_update(cfg.train, dict(global_batch_size=2 * SHAPE.batch, dist=dict(exact_reduction=exact)))
    trainer = gpt.build_trainer(cfg)
    ddp = build_ddp(trainer)
    device = dist.get_device()
    times: dict[str, list[float]] = {"trainer": [], "ddp": []}
    with EventStorage(0) as trainer.storage:
        trainer.before_train()
        run = gpt.TrainerRun(trainer)
        run.steps(args.warmup)
        gpt.plain_steps(ddp, args.warmup)
        sides = {
            "trainer": lambda: gpt.timed(lambda: run.steps(args.steps), device),
            "ddp": lambda: gpt.timed(lambda: gpt.plain_steps(ddp, args.steps), device),
        }
        for name, timing in gpt.alternate(args.rounds, sides):
            times[name].append(timing.wall)
        trainer.after_train()
    return times


def main() -> None:
    if "RANK" not in os.environ:
        launch_on_two_processes()
    args = parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for mode, exact in MODES.items():
            results[mode] = measure(args, exact, os.path.join(output_dir, mode))
    if dist.get_rank() != 0:
        return
    tokens = 2 * SHAPE.tokens_per_step * args.steps
    print(f"dp=2 gloo, GPT {SHAPE.layers}x{SHAPE.hidden}, seq {SHAPE.seq}, micro batch {SHAPE.batch} per rank, "
          f"{args.rounds} rounds of {args.steps} steps ({tokens} tokens each)")
    for mode, times in results.items():
        # Same tokens on both sides: the tokens/s ratio is the inverse ratio of the times.
        ratios = [d / t for t, d in zip(times["trainer"], times["ddp"])]
        ratio = statistics.median(ratios)
        rates = {side: tokens / statistics.median(seconds) for side, seconds in times.items()}
        verdict = ("PASS" if ratio >= 1.0 else "FAIL") if mode == "default" else "(informative)"
        spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
        print(f"{mode:>8}: trainer {rates['trainer']:.0f} tok/s, ddp {rates['ddp']:.0f} tok/s, "
              f"ratio trainer/ddp = {ratio:.3f} {verdict} (rounds {spread})")


if __name__ == "__main__":
    main()
