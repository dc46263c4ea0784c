"""Generate with the Shakespeare Llama in one line.

    from projects.llama.pipeline import predict
    predict("ROMEO:", max_new_tokens=40)          # greedy; do_sample=True, top_p=... sample

Any checkpoint of this project works (`model_path`), also the SFT one with its config.
"""
from __future__ import annotations

import os
from typing import Any

from projects.shakespeare.pipeline import load_generator

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain.py")
DEFAULT_MODEL = "output/llama_shakespeare/model_final"


def predict(prompt: str, model_path: str = DEFAULT_MODEL, config_file: str = CONFIG, **generate_kwargs: Any) -> str:
    """The prompt continued by the Llama (default 40 new tokens, greedy), through the
    inference pipeline (`TextGenerationPipeline`, KV cache)."""
    generate_kwargs.setdefault("max_new_tokens", 40)
    return load_generator(model_path, config_file)(prompt, **generate_kwargs)[0]["generated_text"]
