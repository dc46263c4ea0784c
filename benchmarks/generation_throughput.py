#!/usr/bin/env python
"""Greedy generation tokens/s: this project's `generate` vs `transformers`' `generate`.

Both run the same weights (a random Hugging Face GPT-2, 6 layers, hidden 512, loaded into
`GPTForPreTraining` with `load_huggingface_gpt2`) on the same prompt batch for the same
number of new tokens, one thread, rounds alternating so that machine noise hits both
alike; the ratio of median tokens/s is printed, then ours with the KV cache vs without.
The tokens of all runs must agree (checked).

    OMP_NUM_THREADS=1 python benchmarks/generation_throughput.py [--rounds 5 --new-tokens 128]

Targets: ours >= 1.0x transformers, cached >= 5x uncached.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402


def build(args):
    import transformers

    from libai.models import GPTForPreTraining
    from libai.models.utils.model_loader import load_huggingface_gpt2

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=50257, n_positions=args.prompt_length + args.new_tokens, n_embd=args.hidden,
        n_layer=args.layers, n_head=args.hidden // 64,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.generation_config.eos_token_id = None
    with tempfile.TemporaryDirectory() as path:
        hf.save_pretrained(path)
        ours = load_huggingface_gpt2(path, GPTForPreTraining).eval()
    return hf, ours


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    hf, ours = build(args)
    prompts = torch.randint(0, 50257, (args.batch, args.prompt_length), generator=torch.Generator().manual_seed(1))
    new = args.new_tokens
    tokens = args.batch * new

    def run_ours(use_cache=True):
        return ours.generate(prompts, max_new_tokens=new, use_cache=use_cache)

    def run_hf():
        with torch.no_grad():
            return hf.generate(prompts, max_new_tokens=new, do_sample=False, top_k=None, pad_token_id=0)

    reference, _ = timed(run_hf)  # warm-up of both
    run_ours()
    ours_rates, hf_rates = [], []
    for _ in range(args.rounds):
        out, seconds = timed(run_ours)
        assert torch.equal(out, reference), "ours and transformers made different tokens"
        ours_rates.append(tokens / seconds)
        out, seconds = timed(run_hf)
        hf_rates.append(tokens / seconds)
    cached = statistics.median(ours_rates)
    theirs = statistics.median(hf_rates)
    out, seconds = timed(lambda: run_ours(use_cache=False))
    assert torch.equal(out, reference), "uncached generation made different tokens"
    uncached = tokens / seconds

    print(f"GPT-2 {args.layers} layers, hidden {args.hidden}, batch {args.batch} x {args.prompt_length}-token "
          f"prompts, {new} new tokens, greedy, 1 thread, {args.rounds} alternating rounds")
    print(f"  ours (KV cache)   {cached:8.1f} tokens/s  (rounds: {', '.join(f'{r:.0f}' for r in ours_rates)})")
    print(f"  transformers      {theirs:8.1f} tokens/s  (rounds: {', '.join(f'{r:.0f}' for r in hf_rates)})")
    print(f"  ours, no cache    {uncached:8.1f} tokens/s  (one run)")
    vs_hf, vs_uncached = cached / theirs, cached / uncached
    print(f"ours / transformers = {vs_hf:.3f}x  -> {'PASS' if vs_hf >= 1.0 else 'FAIL'} (target >= 1.0x)")
    print(f"cached / uncached   = {vs_uncached:.2f}x  -> {'PASS' if vs_uncached >= 5.0 else 'FAIL'} (target >= 5x)")


if __name__ == "__main__":
    main()
