"""Use the Shakespeare models in one line.

    from projects.shakespeare.pipeline import predict, predict_genre
    predict("ROMEO:", max_new_tokens=40)       # "ROMEO: ..." (the GPT-2 of gpt2_pretrain.py)
    predict_genre("Thou art more lovely ...")  # {"label": "comedy", "score": 0.71}

`predict` takes every `generate` argument (`do_sample`, `top_p`, `num_beams`, ...); greedy
by default. Each pipeline is built once per (model_path, config).
"""
from __future__ import annotations

import functools
import os
from typing import Any

from libai.inference import TextClassificationPipeline, TextGenerationPipeline

HERE = os.path.dirname(os.path.abspath(__file__))
GPT2_CONFIG = os.path.join(HERE, "gpt2_pretrain.py")
GENRE_CONFIG = os.path.join(HERE, "bert_classification.py")
GPT2_MODEL = "output/gpt2_shakespeare/model_final"
GENRE_MODEL = "output/bert_folio_genre/model_final"


@functools.lru_cache(maxsize=4)
def load_generator(model_path: str = GPT2_MODEL, config_file: str = GPT2_CONFIG) -> TextGenerationPipeline:
    """The text generator of GPT-2 checkpoint `model_path`."""
    return TextGenerationPipeline(config_file, model_path=model_path)


@functools.lru_cache(maxsize=4)
def load_genre_classifier(model_path: str = GENRE_MODEL, config_file: str = GENRE_CONFIG) -> TextClassificationPipeline:
    """The Folio-genre classifier of checkpoint `model_path`."""
    from projects.shakespeare.folio_genre import GENRES

    return TextClassificationPipeline(config_file, model_path=model_path, labels=list(GENRES), max_seq_length=64)


def predict(prompt: str, model_path: str = GPT2_MODEL, config_file: str = GPT2_CONFIG, **generate_kwargs: Any) -> str:
    """The prompt continued by the Shakespeare GPT-2 (default 40 new tokens, greedy)."""
    generate_kwargs.setdefault("max_new_tokens", 40)
    return load_generator(model_path, config_file)(prompt, **generate_kwargs)[0]["generated_text"]


def predict_genre(passage: str, model_path: str = GENRE_MODEL, config_file: str = GENRE_CONFIG, **kwargs: Any) -> dict:
    """`{"label": "comedy" | "history" | "tragedy", "score": probability}` of a passage."""
    return load_genre_classifier(model_path, config_file)(passage, **kwargs)
