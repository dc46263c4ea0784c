"""Hugging Face weights <-> LiBai models (BERT, GPT-2, Llama), under any parallel layout.

    from libai.models import BertModel, GPTForPreTraining
    from libai.models.utils.model_loader import (
        load_huggingface_bert, load_huggingface_gpt2, load_huggingface_llama, export_to_huggingface,
    )

    bert = load_huggingface_bert("path/to/bert")                 # BertModel
    gpt = load_huggingface_gpt2("path/to/gpt2", GPTForPreTraining, output_dropout_prob=0.0)
    export_to_huggingface(gpt, "out/gpt2")                       # config.json + model.safetensors

LiBai's class API works too: `BertLoaderHuggerFace(BertModel, cfg, path).load()`.
"""
from __future__ import annotations

import os
from typing import Union

from torch import nn

from .base_loader import Entry, HuggingFaceCheckpointError, ModelLoaderHuggerFace
from .bert_loader import BertLoaderHuggerFace, load_huggingface_bert
from .gpt_loader import GPT2LoaderHuggerFace, load_huggingface_gpt2
from .llama_loader import LlamaLoaderHuggerFace, load_huggingface_llama
from .roberta_loader import RobertaLoaderHuggerFace, load_huggingface_roberta

# RoBERTa before BERT: a RobertaModel is a BertModel.
_LOADERS = (RobertaLoaderHuggerFace, BertLoaderHuggerFace, GPT2LoaderHuggerFace, LlamaLoaderHuggerFace)


def export_to_huggingface(model: nn.Module, out_dir: Union[str, os.PathLike]) -> str:
    """Write a LiBai BERT, GPT or Llama model as a Hugging Face checkpoint folder (config.json +
    model.safetensors); a collective under several processes (call it on every rank).
    Returns `out_dir`."""
    for loader in _LOADERS:
        if any(isinstance(m, loader.base_model_class) for m in model.modules()):
            return loader.export(model, out_dir)
    raise HuggingFaceCheckpointError(
        f"{type(model).__name__} cannot be exported to Hugging Face: it contains no BertModel, GPTModel or LlamaModel"
    )


__all__ = [
    "BertLoaderHuggerFace",
    "Entry",
    "GPT2LoaderHuggerFace",
    "LlamaLoaderHuggerFace",
    "RobertaLoaderHuggerFace",
    "HuggingFaceCheckpointError",
    "ModelLoaderHuggerFace",
    "export_to_huggingface",
    "load_huggingface_bert",
    "load_huggingface_gpt2",
    "load_huggingface_llama",
    "load_huggingface_roberta",
]
