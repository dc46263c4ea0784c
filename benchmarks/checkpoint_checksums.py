#!/usr/bin/env python
"""What checksummed checkpoints cost: save time with and without the checksums, the check
on load, and the time from SIGTERM to the exit of a preempted run.

Two models on one process, each with its AdamW state (one step taken, so the optimizer
holds two moments per weight): the GPT-2 of `projects/shakespeare/gpt2_pretrain.py` and a
~100M-parameter stack of linear layers. Each round saves a checkpoint
(`Checkpointer.save`, which hashes the files as its last step) and times that hashing
(`write_checksums`) and the check on load (`verify_checksums`) on the same files; the
ratio is checksum time over the rest of the save, median over the rounds.

    OMP_NUM_THREADS=1 python benchmarks/checkpoint_checksums.py [--rounds 5] [--skip-sigterm]
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from libai.config import LazyConfig, instantiate  # noqa: E402
from libai.utils import checkpoint as ckpt  # noqa: E402


def shakespeare_gpt2() -> nn.Module:
    cfg = LazyConfig.load(os.path.join(REPO, "projects/shakespeare/gpt2_pretrain.py"))
    return instantiate(cfg.model)


def linear_stack(params: int = 100_000_000, width: int = 2048) -> nn.Module:
    layers = max(1, params // (width * width))
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def with_optimizer_state(model: nn.Module) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return optimizer


def measure(name: str, model: nn.Module, rounds: int, root: str) -> dict:
    optimizer = with_optimizer_state(model)
    checkpointer = ckpt.Checkpointer(model, root, optimizer=optimizer)
    saves, sums, checks = [], [], []
    for r in range(rounds):
        start = time.perf_counter()
        path = checkpointer.save(f"model_{r:07d}")
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        ckpt.write_checksums(path)
        sums.append(time.perf_counter() - start)
        start = time.perf_counter()
        ckpt.verify_checksums(path)
        checks.append(time.perf_counter() - start)
        shutil.rmtree(path)
    size = sum(p.numel() for p in model.parameters())
    save, summed, check = (statistics.median(x) for x in (saves, sums, checks))
    row = dict(model=name, params=size, save_s=save, checksum_s=summed, verify_s=check, ratio=summed / (save - summed))
    print(
        f"{name:>22}  {size / 1e6:7.1f}M params  save {save:6.3f} s (checksums {summed:.3f} s = "
        f"{100 * row['ratio']:.1f}% of the save without them)  verify on load {check:.3f} s"
    )
    return row


def sigterm_to_exit(root: str) -> float:
    """Seconds from SIGTERM to the launcher's exit, for the tests' tiny GPT on 2 processes."""
    out = os.path.join(root, "preempted")
    cmd = [
        "bash", os.path.join(REPO, "tools/train.sh"), os.path.join(REPO, "tools/train_net.py"),
        os.path.join(REPO, "tests/configs/tiny_gpt.py"), "2", f"train.output_dir={out}", "train.train_iter=100000",
    ]
    env = dict(os.environ, PORT="29613", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not os.path.exists(os.path.join(out, "metrics.json")):
        time.sleep(0.01)
    time.sleep(1.0)
    start = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    elapsed = time.perf_counter() - start
    line = next((line for line in err.splitlines() if line.startswith("stopped:")), "no 'stopped:' line")
    print(f"SIGTERM to exit: {elapsed:.2f} s (exit status {proc.returncode}; {line})")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-sigterm", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    root = tempfile.mkdtemp(prefix="libai-ckpt-bench-")
    try:
        rows = [
            measure("shakespeare GPT-2", shakespeare_gpt2(), args.rounds, root),
            measure("100M linear stack", linear_stack(), args.rounds, root),
        ]
        worst = max(row["ratio"] for row in rows)
        print(f"checksum cost: {100 * worst:.1f}% of the save at most -> {'PASS' if worst < 0.05 else 'FAIL'} (target < 5%)")
        if not args.skip_sigterm:
            sigterm_to_exit(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
