"""Hugging Face BERT <-> LiBai `BertModel` (and `BertForPreTraining`, `BertForClassification`).

Hugging Face's BERT is post-LN; LiBai's computes the same thing with pre-LN layers and
`apply_residual_post_layernorm=True` once the LayerNorms move one place along: the
embeddings' LayerNorm becomes layer 0's `input_layernorm`, layer i's output LayerNorm
becomes layer i+1's `input_layernorm`, and the last one `final_layernorm`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

from torch import nn

from libai.models.bert_model import BertModel

from .base_loader import CONFIG_NAME, Entry, HuggingFaceCheckpointError, ModelLoaderHuggerFace

# LiBai config key <- Hugging Face config.json key.
_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_dropout_prob": "hidden_dropout_prob",
    "attention_probs_dropout_prob": "attention_probs_dropout_prob",
    "max_position_embeddings": "max_position_embeddings",
    "num_tokentypes": "type_vocab_size",
    "initializer_range": "initializer_range",
    "layernorm_eps": "layer_norm_eps",
}

# Tensors of a Hugging Face BERT checkpoint that hold no weight of their own.
_IGNORED = (
    "embeddings.position_ids",  # a buffer (0, 1, 2, ...)
    "cls.predictions.decoder.weight",  # tied to the word embeddings
    "cls.predictions.decoder.bias",  # tied to cls.predictions.bias
)


def _layer_entries(i: int, num_layers: int) -> list[Entry]:
    hf, lb = f"encoder.layer.{i}.", f"encoders.{i}."
    # Layer i's output LayerNorm is the next layer's input LayerNorm (see the module docstring).
    out_norm = f"encoders.{i + 1}.input_layernorm." if i + 1 < num_layers else "final_layernorm."
    entries = [
        Entry(
            lb + f"self_attention.query_key_value.{p}",
            tuple(f"{hf}attention.self.{m}.{p}" for m in ("query", "key", "value")),
            "qkv",
        )
        for p in ("weight", "bias")
    ]
    for p in ("weight", "bias"):
        entries += [
            Entry(lb + f"self_attention.dense.{p}", (f"{hf}attention.output.dense.{p}",)),
            Entry(lb + f"post_attention_layernorm.{p}", (f"{hf}attention.output.LayerNorm.{p}",)),
            Entry(lb + f"mlp.dense_h_to_4h.{p}", (f"{hf}intermediate.dense.{p}",)),
            Entry(lb + f"mlp.dense_4h_to_h.{p}", (f"{hf}output.dense.{p}",)),
            Entry(out_norm + p, (f"{hf}output.LayerNorm.{p}",)),
        ]
    return entries


def _head_entries() -> list[Entry]:
    pairs = [
        ("cls_head.predictions.dense", "cls.predictions.transform.dense"),
        ("cls_head.predictions.layernorm", "cls.predictions.transform.LayerNorm"),
        ("cls_head.seq_relationship", "cls.seq_relationship"),
        ("classifier", "classifier"),
    ]
    # Heads are optional: a backbone checkpoint loads into a model with new heads.
    entries = [
        Entry(f"{lb}.{p}", (f"{hf}.{p}",), base=False, optional=True) for lb, hf in pairs for p in ("weight", "bias")
    ]
    entries.append(Entry("cls_head.lm_logits.bias", ("cls.predictions.bias",), base=False, optional=True))
    return entries


class BertLoaderHuggerFace(ModelLoaderHuggerFace):
    """Load a Hugging Face BERT checkpoint (BertModel, BertForPreTraining or
    BertForSequenceClassification) into a LiBai BERT model; see `ModelLoaderHuggerFace`.

    Example::

        model = BertLoaderHuggerFace(BertModel, None, "path/to/bert").load()
    """

    base_model_class = BertModel
    hf_base_prefix = "bert."
    architecture_keys = (
        "vocab_size",
        "hidden_size",
        "hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "num_tokentypes",
        "layernorm_eps",
    )
    # The original BERT's residual order (see the module docstring).
    fixed_config = {"apply_residual_post_layernorm": True}

    def config_from_hf(self, hf_config: Mapping) -> dict:
        """LiBai BERT config values from a Hugging Face BERT config.json."""
        _check_supported(hf_config)
        missing = [hf_key for hf_key in _CONFIG_KEYS.values() if hf_key not in hf_config]
        if missing:
            raise HuggingFaceCheckpointError(f"{CONFIG_NAME} lacks {missing[0]!r}: is it a BERT config?")
        cfg = {key: hf_config[hf_key] for key, hf_key in _CONFIG_KEYS.items()}
        if hf_config.get("id2label"):
            cfg["num_labels"] = len(hf_config["id2label"])
        return cfg

    @classmethod
    def config_to_hf(cls, model: nn.Module, base: nn.Module) -> dict:
        """A Hugging Face BERT config.json for `model`."""
        c = base.cfg
        if not c["apply_residual_post_layernorm"]:
            raise HuggingFaceCheckpointError(
                "this BERT has apply_residual_post_layernorm=False (Megatron's pre-LN BERT), "
                "which Hugging Face's BERT cannot express: only post-LN BERTs can be exported"
            )
        if c["num_tokentypes"] < 1:
            raise HuggingFaceCheckpointError("Hugging Face's BERT needs token-type embeddings: num_tokentypes is 0")
        hf = {hf_key: c[key] for key, hf_key in _CONFIG_KEYS.items()}
        hf.update(model_type="bert", hidden_act="gelu", position_embedding_type="absolute", pad_token_id=0)
        architecture = {
            "BertForPreTraining": "BertForPreTraining",
            "BertForClassification": "BertForSequenceClassification",
        }
        hf["architectures"] = [architecture.get(type(model).__name__, "BertModel")]
        if hasattr(model, "num_labels"):
            hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
            hf["label2id"] = {f"LABEL_{i}": i for i in range(model.num_labels)}
        return hf

    @classmethod
    def entries(cls, cfg: Mapping) -> list[Entry]:
        """The BERT name map (LiBai parameter <- Hugging Face tensors)."""
        num_layers = cfg["hidden_layers"]
        # Without layers, the embeddings' LayerNorm would be the final one: not a BERT.
        first_norm = "encoders.0.input_layernorm." if num_layers > 0 else "final_layernorm."
        entries = [
            Entry("embeddings.vocab_embeddings.weight", ("embeddings.word_embeddings.weight",)),
            Entry("embeddings.position_embeddings.weight", ("embeddings.position_embeddings.weight",)),
            Entry("embeddings.tokentype_embeddings.weight", ("embeddings.token_type_embeddings.weight",)),
            Entry(first_norm + "weight", ("embeddings.LayerNorm.weight",)),
            Entry(first_norm + "bias", ("embeddings.LayerNorm.bias",)),
            # Hugging Face's BertModel(add_pooling_layer=False) saves no pooler.
            Entry("pooler.dense.weight", ("pooler.dense.weight",), optional=True),
            Entry("pooler.dense.bias", ("pooler.dense.bias",), optional=True),
        ]
        for i in range(num_layers):
            entries += _layer_entries(i, num_layers)
        return entries + _head_entries()

    @classmethod
    def ignored(cls, hf_name: str) -> bool:
        """Buffers and tied copies in a Hugging Face BERT checkpoint."""
        return hf_name in _IGNORED


def _check_supported(hf_config: Mapping) -> None:
    """One-line errors for BERT variants that LiBai's BertModel does not compute."""
    model_type = hf_config.get("model_type", "bert")
    if model_type != "bert":
        raise HuggingFaceCheckpointError(
            f"{CONFIG_NAME} has model_type {model_type!r}: this loader reads BERT checkpoints"
        )
    if hf_config.get("hidden_act", "gelu") != "gelu":
        raise HuggingFaceCheckpointError(
            f"hidden_act {hf_config['hidden_act']!r} is not supported: LiBai's BERT uses the exact (erf) GELU"
        )
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        raise HuggingFaceCheckpointError(
            f"position_embedding_type {hf_config['position_embedding_type']!r} is not supported: only 'absolute'"
        )


def load_huggingface_bert(
    pretrained_model_path: Union[str, os.PathLike],
    model_class: Any = None,
    libai_cfg: Optional[Mapping] = None,
    **overrides: Any,
) -> nn.Module:
    """Build `model_class` (default `BertModel`) from a Hugging Face BERT checkpoint folder
    and load its weights; `overrides` change config values (e.g. `hidden_dropout_prob=0.0`)."""
    return BertLoaderHuggerFace(model_class or BertModel, libai_cfg, pretrained_model_path, **overrides).load()
