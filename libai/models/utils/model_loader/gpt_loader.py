"""Hugging Face GPT-2 <-> LiBai `GPTModel` (and `GPTForPreTraining`).

GPT-2's linear layers are `Conv1D`s, whose weights are stored (in, out): they are
transposed. Its attention projects q, k and v with one `c_attn` whose outputs are [q | k | v];
LiBai's fused `query_key_value` orders them per head ([head, (q, k, v), head_size]), so
that splitting the columns over tensor-parallel ranks gives each rank whole heads.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional, Union

from torch import nn

from libai.models.gpt_model import GPTModel

from .base_loader import CONFIG_NAME, Entry, HuggingFaceCheckpointError, ModelLoaderHuggerFace

# LiBai config key <- Hugging Face config.json key (n_inner is handled apart: None means 4 x).
_CONFIG_KEYS = {
    "hidden_layers": "n_layer",
    "vocab_size": "vocab_size",
    "hidden_size": "n_embd",
    "num_attention_heads": "n_head",
    "max_seq_length": "n_positions",
    "layernorm_epsilon": "layer_norm_epsilon",
    "initializer_range": "initializer_range",
    "embedding_dropout_prob": "embd_pdrop",
    "attention_dropout_prob": "attn_pdrop",
    "output_dropout_prob": "resid_pdrop",
}

# Hugging Face activation_function -> LiBai MLP activation.
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}

# Causal-mask buffers of older checkpoints, and the LM head tied to wte.
_IGNORED = re.compile(r"(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)$")


def _layer_entries(i: int) -> list[Entry]:
    hf, lb = f"h.{i}.", f"transformer.layers.{i}."
    entries = [
        Entry(lb + "self_attention.query_key_value.weight", (hf + "attn.c_attn.weight",), "conv1d_qkv"),
        Entry(lb + "self_attention.query_key_value.bias", (hf + "attn.c_attn.bias",), "conv1d_qkv"),
    ]
    for p in ("weight", "bias"):
        entries += [
            Entry(lb + f"input_layernorm.{p}", (hf + f"ln_1.{p}",)),
            Entry(lb + f"self_attention.dense.{p}", (hf + f"attn.c_proj.{p}",), "conv1d"),
            Entry(lb + f"post_attention_layernorm.{p}", (hf + f"ln_2.{p}",)),
            Entry(lb + f"mlp.dense_h_to_4h.{p}", (hf + f"mlp.c_fc.{p}",), "conv1d"),
            Entry(lb + f"mlp.dense_4h_to_h.{p}", (hf + f"mlp.c_proj.{p}",), "conv1d"),
        ]
    return entries


class GPT2LoaderHuggerFace(ModelLoaderHuggerFace):
    """Load a Hugging Face GPT-2 checkpoint (GPT2Model or GPT2LMHeadModel) into a LiBai
    `GPTModel` / `GPTForPreTraining`; see `ModelLoaderHuggerFace`.

    Example::

        model = GPT2LoaderHuggerFace(GPTForPreTraining, None, "path/to/gpt2").load()
    """

    base_model_class = GPTModel
    hf_base_prefix = "transformer."
    architecture_keys = (
        "hidden_layers",
        "vocab_size",
        "hidden_size",
        "ffn_hidden_size",
        "num_attention_heads",
        "max_seq_length",
        "layernorm_epsilon",
        "activation",
    )
    fixed_config = {"apply_residual_post_layernorm": False}

    def config_from_hf(self, hf_config: Mapping) -> dict:
        """LiBai GPT config values from a Hugging Face GPT-2 config.json."""
        _check_supported(hf_config)
        missing = [hf_key for hf_key in _CONFIG_KEYS.values() if hf_key not in hf_config]
        if missing:
            raise HuggingFaceCheckpointError(f"{CONFIG_NAME} lacks {missing[0]!r}: is it a GPT-2 config?")
        cfg = {key: hf_config[hf_key] for key, hf_key in _CONFIG_KEYS.items()}
        inner = hf_config.get("n_inner")
        cfg["ffn_hidden_size"] = 4 * hf_config["n_embd"] if inner is None else inner
        cfg["activation"] = _ACTIVATIONS[hf_config.get("activation_function", "gelu_new")]
        return cfg

    @classmethod
    def config_to_hf(cls, model: nn.Module, base: nn.Module) -> dict:
        """A Hugging Face GPT-2 config.json for `model`."""
        c = base.cfg
        if c["apply_residual_post_layernorm"]:
            raise HuggingFaceCheckpointError(
                "this GPT has apply_residual_post_layernorm=True, which Hugging Face's GPT-2 "
                "cannot express: only GPTs with apply_residual_post_layernorm=False can be exported"
            )
        hf = {hf_key: c[key] for key, hf_key in _CONFIG_KEYS.items()}
        hf.update(
            model_type="gpt2",
            n_inner=c["ffn_hidden_size"],
            activation_function="gelu_new" if c["activation"] == "gelu_tanh" else "gelu",
            tie_word_embeddings=True,
            architectures=["GPT2LMHeadModel" if type(model).__name__ == "GPTForPreTraining" else "GPT2Model"],
        )
        return hf

    @classmethod
    def entries(cls, cfg: Mapping) -> list[Entry]:
        """The GPT-2 name map (LiBai parameter <- Hugging Face tensors)."""
        entries = [
            Entry("embeddings.token_embeddings.weight", ("wte.weight",)),
            Entry("embeddings.position_embeddings.weight", ("wpe.weight",)),
            Entry("transformer.layernorm_f.weight", ("ln_f.weight",)),
            Entry("transformer.layernorm_f.bias", ("ln_f.bias",)),
        ]
        for i in range(cfg["hidden_layers"]):
            entries += _layer_entries(i)
        return entries

    @classmethod
    def ignored(cls, hf_name: str) -> bool:
        """Causal-mask buffers and the tied LM head of a Hugging Face GPT-2 checkpoint."""
        return bool(_IGNORED.fullmatch(hf_name))


def _check_supported(hf_config: Mapping) -> None:
    """One-line errors for GPT-2 variants that LiBai's GPTModel does not compute."""
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise HuggingFaceCheckpointError(
            f"{CONFIG_NAME} has model_type {model_type!r}: this loader reads GPT-2 checkpoints"
        )
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise HuggingFaceCheckpointError(
            f"activation_function {activation!r} is not supported: use one of {sorted(_ACTIVATIONS)}"
        )
    unsupported = {
        "scale_attn_weights": False,  # LiBai always scales scores by 1/sqrt(head_size)
        "scale_attn_by_inverse_layer_idx": True,
        "add_cross_attention": True,
        "tie_word_embeddings": False,  # LiBai's LM head is the token embedding
    }
    for key, bad in unsupported.items():
        if key in hf_config and hf_config[key] == bad:
            raise HuggingFaceCheckpointError(f"{CONFIG_NAME} sets {key}={bad}, which LiBai's GPTModel does not support")


def load_huggingface_gpt2(
    pretrained_model_path: Union[str, os.PathLike],
    model_class: Any = None,
    libai_cfg: Optional[Mapping] = None,
    **overrides: Any,
) -> nn.Module:
    """Build `model_class` (default `GPTModel`) from a Hugging Face GPT-2 checkpoint folder
    and load its weights; `overrides` change config values (e.g. `output_dropout_prob=0.0`)."""
    return GPT2LoaderHuggerFace(model_class or GPTModel, libai_cfg, pretrained_model_path, **overrides).load()
