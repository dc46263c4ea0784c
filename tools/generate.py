#!/usr/bin/env python
"""Generate text from a trained (or Hugging Face) model, streamed to the terminal.

    python tools/generate.py --config-file projects/shakespeare/gpt2_pretrain.py \\
        --model-path output/gpt2_shakespeare/model_final --prompt "ROMEO:" --max-new-tokens 40
    bash tools/infer.sh tools/generate.py 2 --config-file ... --model-path ... --prompt ... \\
        --tensor-parallel 2

Greedy by default; `--do-sample` with `--temperature/--top-k/--top-p` samples (seeded by
`--seed`), `--num-beams N` runs beam search (printed when done, not streamed).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from libai.engine.default import run_with_clear_errors  # noqa: E402
from libai.inference import TextGenerationPipeline  # noqa: E402
from libai.inference.generation import TextStreamer  # noqa: E402
from libai.utils import distributed as dist  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=None, help="the training config (default: config.yaml next to --model-path)")
    parser.add_argument("--model-path", default=None, help="a checkpoint directory (or a Hugging Face folder)")
    parser.add_argument("--mode", default="libai", choices=["libai", "huggingface", "random"])
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--do-sample", action="store_true")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    parser.add_argument("--tensor-parallel", type=int, default=None)
    parser.add_argument("--pipeline-parallel", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    pipe = TextGenerationPipeline(
        args.config_file,
        tensor_parallel=args.tensor_parallel,
        pipeline_parallel=args.pipeline_parallel,
        model_path=args.model_path,
        mode=args.mode,
        device=args.device,
    )
    stream = args.num_beams == 1 and dist.is_main_process()
    streamer = TextStreamer(pipe.tokenizer, skip_special_tokens=True) if stream else None
    result = pipe(
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_beams=args.num_beams,
        repetition_penalty=args.repetition_penalty,
        generator=torch.Generator(device=dist.get_device()).manual_seed(args.seed),
        streamer=streamer,
    )
    if dist.is_main_process() and streamer is None:
        print(result[0]["generated_text"], flush=True)


if __name__ == "__main__":
    run_with_clear_errors(main, parse_args())
