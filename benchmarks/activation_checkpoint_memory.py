#!/usr/bin/env python
"""Peak memory of one training step of a 12-layer GPT with and without activation checkpointing.

The GPT is the tests' `TinyGPT` built only from `libai.layers` (word + position embeddings,
12 causal pre-LN `TransformerLayer`s, final LayerNorm, LM head tied to the embeddings,
`ParallelCrossEntropyLoss`), by default hidden 256, 8 heads, FFN 1024, vocabulary 1024,
sequence 256, batch 8, trained with AdamW. Checkpointing is switched on with
`libai.layers.enable_activation_checkpointing(model)` (non-reentrant `torch.utils.checkpoint`
per `TransformerLayer`, as `train.activation_checkpoint.enabled=True` does).

Each variant runs in its own fresh process (peak RSS is per process), on one process with
the one-rank mesh, and measures:

(a) saved-for-backward bytes: distinct tensor storages packed by autograd during the
    forward (`torch.autograd.graph.saved_tensors_hooks`), parameters excluded: the
    activations a step keeps until backward;
(b) peak live tensor bytes of the step (forward, backward, optimizer step), counted by
    `torch.distributed._tools.mem_tracker.MemTracker` (torch has no CPU allocator
    statistics; MemTracker follows every tensor allocation and free through a dispatch mode);
(c) peak RSS delta: the process's resident-memory high-water mark (VmHWM) during a step
    minus its RSS before it (parameters and data already resident), for the first step
    (which also allocates gradients and AdamW state once, and pays one-time costs) and for
    the second step, the steady state (`malloc_trim` first, so memory freed by the first
    step does not hide the second step's growth). RSS is what the C allocator holds, not
    what the step needs: glibc's default malloc keeps freed blocks below its dynamic mmap
    threshold (up to 32 MiB) in its heap, where recomputed activations interleaved with
    gradients fragment it. So each variant also runs with `MALLOC_MMAP_THRESHOLD_=65536`
    (every tensor of 64 KiB or more is mmapped and unmapped when freed), under which RSS
    follows the live tensors; that is the RSS figure the requirement is checked on, and
    the default-malloc figures are printed beside it.

Required: the step's peak at least 40% lower with checkpointing.

    OMP_NUM_THREADS=1 python benchmarks/activation_checkpoint_memory.py [--layers 12 --hidden 256 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

REQUIRED_REDUCTION = 0.40


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_hwm() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(args: argparse.Namespace, checkpointing: bool) -> dict:
    """One variant, in this process: (a) saved bytes, (b) MemTracker peak, (c) RSS delta."""
    import torch

    from libai.layers import enable_activation_checkpointing
    from libai.utils import distributed as dist
    from tests.helpers.tiny_gpt import TinyGPT

    torch.set_num_threads(1)
    dist.setup_dist_util(dict(pipeline_num_layers=args.layers), device="cpu")
    torch.manual_seed(0)
    model = TinyGPT(args.vocab, args.hidden, args.layers, args.heads, args.seq)
    model.train()
    if checkpointing:
        enable_activation_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=torch.Generator().manual_seed(0))
    batch = dict(input_ids=ids[:, :-1].contiguous(), labels=ids[:, 1:].contiguous())
    param_ptrs = {_local(p).untyped_storage().data_ptr() for p in model.parameters()}
    param_bytes = sum(_local(p).numel() * _local(p).element_size() for p in model.parameters())

    def step(saved: dict | None = None) -> None:
        if saved is None:
            loss = model(**batch)["lm_loss"]
        else:
            with torch.autograd.graph.saved_tensors_hooks(_packer(saved, param_ptrs), lambda t: t):
                loss = model(**batch)["lm_loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # (c) + (a): the first step in a fresh process, RSS high-water mark around it.
    saved: dict = {}
    hwm_reset = _reset_hwm()
    rss_before = _status_kb("VmRSS")
    step(saved)
    rss_first = _status_kb("VmHWM") - rss_before
    # (c) steady state: the second step, after returning freed heap memory to the OS.
    _malloc_trim()
    hwm_reset = _reset_hwm() and hwm_reset
    rss_before = _status_kb("VmRSS")
    step()
    rss_steady = _status_kb("VmHWM") - rss_before
    # (b): a later step (optimizer state exists, as in training) under MemTracker.
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        step()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    return dict(
        checkpointing=checkpointing,
        params=sum(p.numel() for p in model.parameters()),
        param_bytes=param_bytes,
        saved_bytes=sum(saved.values()),
        tracker_peak_bytes=int(peak),
        rss_first=rss_first,
        rss_steady=rss_steady,
        hwm_reset=hwm_reset,
    )


def _malloc_trim() -> None:
    """Give glibc's free heap memory back to the OS (no-op where glibc is absent)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _local(t):
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _packer(saved: dict, param_ptrs: set):
    """A pack hook that records each distinct non-parameter storage's bytes in `saved`."""

    def pack(t):
        storage = _local(t).untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            saved[ptr] = storage.nbytes()
        return t

    return pack


# Every allocation of 64 KiB or more goes to mmap and back to the OS when freed.
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _run_variant(args: argparse.Namespace, checkpointing: bool, extra_env: dict | None = None) -> dict:
    """`measure` in a fresh subprocess, so that its RSS high-water mark is its own."""
    cmd = [sys.executable, os.path.abspath(__file__), "--variant", "ckpt" if checkpointing else "plain"]
    for key in ("layers", "hidden", "heads", "vocab", "seq", "batch"):
        cmd += [f"--{key}", str(getattr(args, key))]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(extra_env or {}))
    env.pop("RANK", None)
    if not extra_env:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"variant {'ckpt' if checkpointing else 'plain'} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(n: float) -> str:
    return f"{n / 2**20:9.1f}"


def main() -> None:
    """Run both variants and print (a), (b), (c) and the reductions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--variant", choices=["plain", "ckpt"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args, args.variant == "ckpt")))
        return
    plain, ckpt = _run_variant(args, False, MMAP_ENV), _run_variant(args, True, MMAP_ENV)
    plain_default, ckpt_default = _run_variant(args, False), _run_variant(args, True)
    for key in ("rss_first", "rss_steady"):
        plain[key + "_default"], ckpt[key + "_default"] = plain_default[key], ckpt_default[key]
    print(
        f"GPT from libai.layers: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, FFN "
        f"{4 * args.hidden}, vocab {args.vocab}, seq {args.seq}, batch {args.batch}; "
        f"{plain['params'] / 1e6:.2f}M parameters ({plain['param_bytes'] / 2**20:.1f} MiB); "
        f"one AdamW step, 1 process, 1 thread"
    )
    print(f"{'MiB':<44} {'plain':>9} {'ckpt':>9} {'reduction':>9}   (RSS rows: MALLOC_MMAP_THRESHOLD_=65536 unless noted)")
    rows = [
        ("(a) saved for backward (activations)", "saved_bytes"),
        ("(b) peak live tensors, MemTracker", "tracker_peak_bytes"),
        ("(b) minus 4 x params (param,grad,2 Adam)", None),
        ("(c) peak RSS delta, first step", "rss_first"),
        ("(c) peak RSS delta, second step", "rss_steady"),
        ("(c) first step, default malloc", "rss_first_default"),
        ("(c) second step, default malloc", "rss_steady_default"),
    ]
    reductions = {}
    for label, key in rows:
        if key is None:
            # Parameters, gradients and the two AdamW moments do not depend on checkpointing.
            fixed = 4 * plain["param_bytes"]
            a, b = plain["tracker_peak_bytes"] - fixed, ckpt["tracker_peak_bytes"] - fixed
        else:
            a, b = plain[key], ckpt[key]
        reductions[label] = 1 - b / a
        print(f"{label:<44} {_mib(a)} {_mib(b)} {reductions[label]:>9.1%}")
    if not (plain["hwm_reset"] and ckpt["hwm_reset"]):
        print("note: could not reset VmHWM; (c) includes the process start-up peak")
    headline = reductions["(b) peak live tensors, MemTracker"]
    rss = min(reductions["(c) peak RSS delta, first step"], reductions["(c) peak RSS delta, second step"])
    ok = headline >= REQUIRED_REDUCTION and rss >= REQUIRED_REDUCTION
    print(
        f"required: >= {REQUIRED_REDUCTION:.0%} lower peak with checkpointing -> "
        f"{'PASS' if ok else 'FAIL'} (step peak {headline:.1%}, RSS at least {rss:.1%})"
    )


if __name__ == "__main__":
    main()
