#!/usr/bin/env python
"""Write a trained checkpoint as a Hugging Face folder (config.json + model.safetensors).

    python tools/export_huggingface.py --model-path output/llama_shakespeare/model_final --out output/llama_hf

The model is built from the run's `config.yaml` (next to the checkpoint; or `--config-file`)
and its weights loaded, then converted by `export_to_huggingface` (BERT, GPT-2, Llama).
`transformers`' `from_pretrained(out)` reads the result, and so do this project's loaders
(e.g. a config whose model is `LazyCall(load_huggingface_llama)(pretrained_model_path=out, ...)`).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from libai.engine.default import run_with_clear_errors  # noqa: E402
from libai.inference.basic import BasePipeline, reject_unknown  # noqa: E402
from libai.models.utils.model_loader import export_to_huggingface  # noqa: E402


class LoadedModel(BasePipeline):
    """A checkpoint's model, built and loaded as the inference pipelines do (no call parameters)."""

    def _parse_parameters(self, **params):
        reject_unknown(type(self).__name__, params)
        return {}, {}, {}


def main(args: argparse.Namespace) -> None:
    """Load the checkpoint and export it."""
    model = LoadedModel(args.config_file, model_path=args.model_path).model
    print(export_to_huggingface(model, args.out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True, help="a checkpoint directory, e.g. output/x/model_final")
    parser.add_argument("--out", required=True, help="the Hugging Face folder to write")
    parser.add_argument("--config-file", default=None, help="the training config (default: config.yaml next to --model-path)")
    run_with_clear_errors(main, parser.parse_args())
