"""Hugging Face RoBERTa <-> LiBai `RobertaModel` (and `RobertaForPreTraining`, `RobertaForCausalLM`).

RoBERTa's encoder has BERT's names and layout, so BERT's name map (`bert_loader`) serves,
with the post-LN LayerNorms moved one place along as there. What is RoBERTa's own: the
`roberta.` prefix, `pad_token_id` (the positions' offset), and the LM head (Hugging Face's
`lm_head.dense`, `lm_head.layer_norm`, `lm_head.bias`; its decoder is tied to the word
embeddings) -> LiBai's `lm_head.dense`, `lm_head.layernorm`, `lm_head.lm_logits.bias`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

from torch import nn

from libai.models.roberta_model import RobertaModel

from .base_loader import CONFIG_NAME, Entry, HuggingFaceCheckpointError
from .bert_loader import BertLoaderHuggerFace, _check_supported

# Tensors of a Hugging Face RoBERTa checkpoint that hold no weight of their own.
_IGNORED = (
    "embeddings.position_ids",  # buffers (older checkpoints save them)
    "embeddings.token_type_ids",
    "lm_head.decoder.weight",  # tied to the word embeddings
    "lm_head.decoder.bias",  # tied to lm_head.bias
)

# LiBai model class -> the Hugging Face architecture it exports as.
_ARCHITECTURES = {
    "RobertaForPreTraining": "RobertaForMaskedLM",
    "RobertaForCausalLM": "RobertaForCausalLM",
}


class RobertaLoaderHuggerFace(BertLoaderHuggerFace):
    """Load a Hugging Face RoBERTa checkpoint (RobertaModel, RobertaForMaskedLM or
    RobertaForCausalLM) into a LiBai RoBERTa model; see `ModelLoaderHuggerFace`.

    Example::

        model = RobertaLoaderHuggerFace(RobertaForPreTraining, None, "path/to/roberta").load()
    """

    base_model_class = RobertaModel
    hf_base_prefix = "roberta."
    architecture_keys = BertLoaderHuggerFace.architecture_keys + ("pad_token_id",)

    def config_from_hf(self, hf_config: Mapping) -> dict:
        """LiBai RoBERTa config values from a Hugging Face RoBERTa config.json."""
        model_type = hf_config.get("model_type", "roberta")
        if model_type != "roberta":
            raise HuggingFaceCheckpointError(
                f"{CONFIG_NAME} has model_type {model_type!r}: this loader reads RoBERTa checkpoints"
            )
        if not hf_config.get("tie_word_embeddings", True):
            raise HuggingFaceCheckpointError(
                "tie_word_embeddings=False is not supported: LiBai's RoBERTa LM head reads the word embeddings"
            )
        # BERT's checks (activation, position type) and keys, read as from a BERT config.
        _check_supported({**hf_config, "model_type": "bert"})
        cfg = super().config_from_hf({**hf_config, "model_type": "bert"})
        cfg["pad_token_id"] = hf_config.get("pad_token_id", 1)
        return cfg

    @classmethod
    def config_to_hf(cls, model: nn.Module, base: nn.Module) -> dict:
        """A Hugging Face RoBERTa config.json for `model`."""
        hf = super().config_to_hf(model, base)
        architecture = _ARCHITECTURES.get(type(model).__name__, "RobertaModel")
        hf.update(
            model_type="roberta",
            architectures=[architecture],
            pad_token_id=base.cfg["pad_token_id"],
            bos_token_id=0,
            eos_token_id=2,
            is_decoder=architecture == "RobertaForCausalLM",
            tie_word_embeddings=True,
        )
        return hf

    @classmethod
    def entries(cls, cfg: Mapping) -> list[Entry]:
        """BERT's encoder map plus RoBERTa's LM head."""
        encoder = [e for e in super().entries(cfg) if e.base]
        head = [
            Entry(f"lm_head.{lb}.{p}", (f"lm_head.{hf}.{p}",), base=False, optional=True)
            for lb, hf in (("dense", "dense"), ("layernorm", "layer_norm"))
            for p in ("weight", "bias")
        ]
        head.append(Entry("lm_head.lm_logits.bias", ("lm_head.bias",), base=False, optional=True))
        return encoder + head

    @classmethod
    def ignored(cls, hf_name: str) -> bool:
        """Buffers and tied copies in a Hugging Face RoBERTa checkpoint."""
        return hf_name in _IGNORED


def load_huggingface_roberta(
    pretrained_model_path: Union[str, os.PathLike],
    model_class: Any = None,
    libai_cfg: Optional[Mapping] = None,
    **overrides: Any,
) -> nn.Module:
    """Build `model_class` (default `RobertaModel`) from a Hugging Face RoBERTa checkpoint
    folder and load its weights; `overrides` change config values (e.g. `hidden_dropout_prob=0.0`)."""
    return RobertaLoaderHuggerFace(model_class or RobertaModel, libai_cfg, pretrained_model_path, **overrides).load()
