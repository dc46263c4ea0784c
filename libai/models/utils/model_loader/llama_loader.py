"""Hugging Face Llama <-> LiBai `LlamaModel` (and `LlamaForCausalLM`).

LiBai's Llama keeps Hugging Face's parameter names and layouts (separate q/k/v projections,
rotary pairs laid out as `rotate_half` expects), so every tensor is a plain copy. The config
is read from either form Hugging Face writes: `rope_theta` and `rope_scaling` at the top
(transformers 4) or a `rope_parameters` dict (transformers 5).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional, Union

from torch import nn

from libai.layers.rotary import rope_inverse_frequencies
from libai.models.llama import LlamaModel

from .base_loader import CONFIG_NAME, Entry, HuggingFaceCheckpointError, ModelLoaderHuggerFace

logger = logging.getLogger(__name__)

# LiBai config key <- Hugging Face config.json key (required ones).
_CONFIG_KEYS = {
    "hidden_layers": "num_hidden_layers",
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "ffn_hidden_size": "intermediate_size",
    "num_attention_heads": "num_attention_heads",
}
# ... and optional ones, with Hugging Face's defaults.
_OPTIONAL_KEYS = {
    "max_position_embeddings": ("max_position_embeddings", 2048),
    "rms_norm_eps": ("rms_norm_eps", 1e-6),
    "attention_bias": ("attention_bias", False),
    "mlp_bias": ("mlp_bias", False),
    "initializer_range": ("initializer_range", 0.02),
    "tie_word_embeddings": ("tie_word_embeddings", False),
}


def _layer_entries(i: int, attention_bias: bool, mlp_bias: bool) -> list[Entry]:
    prefix = f"layers.{i}."
    names = [f"{prefix}input_layernorm.weight", f"{prefix}post_attention_layernorm.weight"]
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        names.append(f"{prefix}self_attn.{proj}.weight")
        if attention_bias:
            names.append(f"{prefix}self_attn.{proj}.bias")
    for proj in ("gate_proj", "up_proj", "down_proj"):
        names.append(f"{prefix}mlp.{proj}.weight")
        if mlp_bias:
            names.append(f"{prefix}mlp.{proj}.bias")
    return [Entry(name, (name,)) for name in names]


def rope_config(hf_config: Mapping) -> tuple[float, Optional[dict]]:
    """(rope_theta, rope_scaling or None) of a Hugging Face config, in either form."""
    params = dict(hf_config.get("rope_parameters") or {})
    theta = float(params.pop("rope_theta", hf_config.get("rope_theta", 10000.0)))
    scaling = dict(hf_config.get("rope_scaling") or params)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    return theta, (None if kind == "default" else scaling)


class LlamaLoaderHuggerFace(ModelLoaderHuggerFace):
    """Load a Hugging Face Llama checkpoint (LlamaModel or LlamaForCausalLM) into a LiBai
    `LlamaModel` / `LlamaForCausalLM`; see `ModelLoaderHuggerFace`.

    Example::

        model = LlamaLoaderHuggerFace(LlamaForCausalLM, None, "path/to/llama").load()
    """

    base_model_class = LlamaModel
    hf_base_prefix = "model."
    architecture_keys = (
        "hidden_layers",
        "vocab_size",
        "hidden_size",
        "ffn_hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "attention_bias",
        "mlp_bias",
        "tie_word_embeddings",
    )

    def config_from_hf(self, hf_config: Mapping) -> dict:
        """LiBai Llama config values from a Hugging Face Llama config.json."""
        _check_supported(hf_config)
        missing = [hf_key for hf_key in _CONFIG_KEYS.values() if hf_key not in hf_config]
        if missing:
            raise HuggingFaceCheckpointError(f"{CONFIG_NAME} lacks {missing[0]!r}: is it a Llama config?")
        cfg = {key: hf_config[hf_key] for key, hf_key in _CONFIG_KEYS.items()}
        cfg.update({key: hf_config.get(hf_key, default) for key, (hf_key, default) in _OPTIONAL_KEYS.items()})
        cfg["num_key_value_heads"] = hf_config.get("num_key_value_heads") or cfg["num_attention_heads"]
        cfg["head_dim"] = hf_config.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        cfg["rope_theta"], cfg["rope_scaling"] = rope_config(hf_config)
        try:
            rope_inverse_frequencies(cfg["head_dim"], cfg["rope_theta"], cfg["rope_scaling"])
        except (ValueError, KeyError) as err:
            raise HuggingFaceCheckpointError(f"{CONFIG_NAME}'s rope_scaling cannot be used: {err}") from None
        return cfg

    @classmethod
    def config_to_hf(cls, model: nn.Module, base: nn.Module) -> dict:
        """A Hugging Face Llama config.json for `model` (readable by transformers 4 and 5)."""
        c = base.cfg
        hf = {hf_key: c[key] for key, hf_key in _CONFIG_KEYS.items()}
        hf.update({hf_key: c[key] for key, (hf_key, _) in _OPTIONAL_KEYS.items()})
        hf.update(
            model_type="llama",
            architectures=["LlamaForCausalLM" if type(model).__name__ == "LlamaForCausalLM" else "LlamaModel"],
            num_key_value_heads=c["num_key_value_heads"],
            head_dim=c["head_dim"],
            hidden_act="silu",
            rope_theta=c["rope_theta"],
            rope_scaling=c["rope_scaling"],
        )
        return hf

    @classmethod
    def entries(cls, cfg: Mapping) -> list[Entry]:
        """The Llama name map (the same names on both sides)."""
        entries = [Entry("embed_tokens.weight", ("embed_tokens.weight",)), Entry("norm.weight", ("norm.weight",))]
        for i in range(cfg["hidden_layers"]):
            entries += _layer_entries(i, cfg.get("attention_bias", False), cfg.get("mlp_bias", False))
        # The LM head is outside the base model; a tied model has none.
        entries.append(Entry("lm_head.weight", ("lm_head.weight",), base=False))
        return entries

    @classmethod
    def ignored(cls, hf_name: str) -> bool:
        """The LM head (tied models may store a copy) and rotary buffers of old checkpoints."""
        return hf_name == "lm_head.weight" or hf_name.endswith("rotary_emb.inv_freq")


def _check_supported(hf_config: Mapping) -> None:
    """One-line errors for checkpoints LiBai's Llama does not compute."""
    model_type = hf_config.get("model_type", "llama")
    if model_type != "llama":
        architectures = ", ".join(hf_config.get("architectures") or [model_type])
        raise HuggingFaceCheckpointError(
            f"{CONFIG_NAME} describes a {model_type!r} model ({architectures}), not Llama: "
            f"load it with the loader of its family (load_huggingface_gpt2, load_huggingface_bert, ...)"
        )
    activation = hf_config.get("hidden_act", "silu")
    if activation != "silu":
        raise HuggingFaceCheckpointError(f"hidden_act {activation!r} is not supported: LiBai's Llama uses SwiGLU (silu)")
    if hf_config.get("attention_dropout", 0.0):
        logger.warning(
            "attention_dropout=%s in %s is not applied: LiBai's Llama has no attention dropout",
            hf_config["attention_dropout"], CONFIG_NAME,
        )


def load_huggingface_llama(
    pretrained_model_path: Union[str, os.PathLike],
    model_class: Any = None,
    libai_cfg: Optional[Mapping] = None,
    **overrides: Any,
) -> nn.Module:
    """Build `model_class` (default `LlamaModel`) from a Hugging Face Llama checkpoint folder
    (one safetensors file, shards, or pytorch_model.bin) and load its weights under the
    current layout; `overrides` change config values."""
    return LlamaLoaderHuggerFace(model_class or LlamaModel, libai_cfg, pretrained_model_path, **overrides).load()
