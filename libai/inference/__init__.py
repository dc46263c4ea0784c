"""Inference: `generate()` with Hugging Face's options, and LiBai's pipelines.

    from libai.inference import TextGenerationPipeline
    pipe = TextGenerationPipeline("projects/shakespeare/gpt2_pretrain.py",
                                  model_path="output/shakespeare_gpt2/model_final")
    pipe("ROMEO:", max_new_tokens=20)   # [{"generated_text": "ROMEO: ..."}]

The pipelines import the model zoo, which itself uses `libai.inference.generation`, so they
are loaded on first use.
"""
from importlib import import_module
from typing import Any

from .generation import GenerationError, GenerationMixin, generate

_PIPELINES = {
    "BasePipeline": "basic",
    "PipelineError": "basic",
    "TextGenerationPipeline": "text_generation",
    "TextClassificationPipeline": "text_classification",
    "ImageClassificationPipeline": "image_classification",
}


def __getattr__(name: str) -> Any:
    if name in _PIPELINES:
        return getattr(import_module(f".{_PIPELINES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GenerationError", "GenerationMixin", "generate", *_PIPELINES]
