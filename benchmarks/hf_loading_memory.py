#!/usr/bin/env python
"""Memory of loading a sharded Hugging Face Llama under tensor parallelism: what each rank
holds at its peak while the Llama loader reads the checkpoint, against the size of the
full model and of the rank's own slice.

A random `transformers.LlamaForCausalLM` (float32, `--hidden`, `--layers`, `--vocab`) is
saved with `max_shard_size=--shard-mb`; then `--tp` gloo processes each build the LiBai
model and load the folder. Every 2 ms a thread reads the process's anonymous resident
memory (`RssAnon` in /proc/self/status: tensors, not the page cache of mapped files); the
peak minus the value before is what a phase cost: building the model (random
initialisation, then this rank's slices), and loading the checkpoint into it (each
tensor read alone, its slice copied, the tensor dropped).

    python benchmarks/hf_loading_memory.py [--hidden 1024 --layers 8 --vocab 32000 --tp 2 --shard-mb 100]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from tests.helpers.dist import run_on_ranks  # noqa: E402

MB = 1024 * 1024


def anon_rss() -> int:
    """This process's anonymous resident memory in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakSampler:
    """The highest `anon_rss()` seen while the `with` block runs."""

    def __enter__(self) -> "PeakSampler":
        self.base = self.peak = anon_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_rss())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss())

    @property
    def cost(self) -> int:
        return self.peak - self.base


def _rank(folder: str, tp: int) -> dict:
    from libai.models import LlamaForCausalLM
    from libai.models.utils.model_loader import LlamaLoaderHuggerFace
    from libai.models.utils.model_loader.base_loader import read_checkpoint
    from libai.utils import distributed as dist

    dist.setup_dist_util({"tensor_parallel_size": tp}, device="cpu")
    loader = LlamaLoaderHuggerFace(LlamaForCausalLM, None, folder)
    cfg = loader.build_config(read_checkpoint(folder)[0])
    with PeakSampler() as build:
        model = LlamaForCausalLM(cfg)
    loader.model = model
    with PeakSampler() as load:
        loader.load()
    own = sum((p.to_local() if hasattr(p, "to_local") else p).numel() * p.element_size() for p in model.parameters())
    return {"build": build.cost, "load": load.cost, "own": own}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--shard-mb", type=int, default=100)
    args = parser.parse_args()
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 8 / 3) // 64 * 64,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 128,
    )
    with tempfile.TemporaryDirectory() as folder:
        model = transformers.LlamaForCausalLM(config)
        full = sum(p.numel() * p.element_size() for p in model.parameters())
        model.save_pretrained(folder, max_shard_size=f"{args.shard_mb}MB")
        del model
        shards = len([f for f in os.listdir(folder) if f.endswith(".safetensors")])
        results = run_on_ranks(_rank, args.tp, folder, args.tp, timeout=1800)
    print(f"Llama {full / MB:.0f} MB (float32, hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}) "
          f"in {shards} shards of <= {args.shard_mb} MB; tp={args.tp}, torch {torch.__version__}")
    print(f"{'rank':>4} {'own slice MB':>13} {'build peak MB':>14} {'load peak MB':>13} {'load peak/full':>15}")
    for rank, r in enumerate(results):
        print(f"{rank:>4} {r['own'] / MB:13.0f} {r['build'] / MB:14.0f} {r['load'] / MB:13.0f} {r['load'] / full:15.2f}")


if __name__ == "__main__":
    main()
