"""GPT-2 in LiBai's (Megatron's) form, built only from `libai.layers`.

Token + position embeddings, `hidden_layers` causal pre-LN transformer layers, a final
LayerNorm, and an LM head tied to the token embeddings. Module names follow LiBai
(`GPT_model.embeddings.token_embeddings`, `GPT_model.transformer.layers.N`,
`GPT_model.transformer.layernorm_f`, ...), so configs and weight converters written for
LiBai apply unchanged.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
from torch import nn

from libai.config import configurable
from libai.inference.generation import GenerationMixin
from libai.layers import (
    AttnMaskType,
    LayerNorm,
    LMLogits,
    ParallelCrossEntropyLoss,
    KVCache,
    TokenPositionEmbedding,
    TransformerLayer,
)
from libai.layers.utils import to_local
from libai.utils import distributed as dist

from .utils.config_args import init_kwargs_from_config
from .utils.weight_init import init_method_normal, scaled_init_method_normal


class Transformer(nn.Module):
    """GPT's stack of causal pre-LN `TransformerLayer`s and the final LayerNorm `layernorm_f`.

    Args:
        make_layer: builds one layer from its `layer_idx` (a `functools.partial` of
            `TransformerLayer` holding the model's sizes and switches), so that the model's
            flags reach the layers without being listed here again.
        layer_ids: the layers' `layer_idx`, in call order.
        layernorm_f: the LayerNorm that closes the stack (layer_idx -1).
    """

    def __init__(self, make_layer: Callable[..., TransformerLayer], layer_ids: range, layernorm_f: LayerNorm) -> None:
        super().__init__()
        self.layers = nn.ModuleList([make_layer(layer_idx=i) for i in layer_ids])
        self.layernorm_f = layernorm_f

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Run every layer (each appending its new keys and values to `past_key_values`
        when given), then the final LayerNorm. `attention_mask` is a boolean keep-mask
        broadcastable to [b, heads, q, k]."""
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, past_key_value=past_key_values)
        return self.layernorm_f(hidden_states)


class GPTModel(nn.Module):
    """GPT-2 language model (LiBai's `GPTModel`): `forward(input_ids)` returns the logits.

    The logits are vocabulary-parallel, [b, s, vocab_size / tp] on each tensor-parallel rank
    (this rank's slice of the vocabulary), which is what `ParallelCrossEntropyLoss` reads
    without ever gathering the full vocabulary; `GPTForPreTraining` gathers them in eval.

    Weights start as in Megatron / GPT-2: normal(0, initializer_range), and the projections
    into the residual stream (attention and MLP outputs) scaled by 1 / sqrt(2 * hidden_layers)
    when `use_scaled_init_for_output_weights`.

    Args:
        hidden_layers: number of transformer layers.
        vocab_size: vocabulary size (must divide by the tensor-parallel size).
        hidden_size, ffn_hidden_size, num_attention_heads: layer sizes.
        max_seq_length: number of position embeddings.
        embedding_dropout_prob, attention_dropout_prob, output_dropout_prob: dropouts.
        layernorm_epsilon: LayerNorm eps.
        initializer_range: std of the normal initialisation.
        use_scaled_init_for_output_weights: scale the output projections' std as above.
        bias_gelu_fusion, bias_dropout_fusion, scale_mask_softmax_fusion,
            apply_query_key_layer_scaling: LiBai's kernel switches (same results here).
        apply_residual_post_layernorm: take residuals after the LayerNorms (LiBai option).
        amp_enabled: accepted for LiBai compatibility.
        activation: "gelu" (LiBai / Megatron) or "gelu_tanh" (OpenAI GPT-2, Hugging Face's
            "gelu_new", set by the Hugging Face loader).
    """

    @configurable
    def __init__(
        self,
        hidden_layers: int,
        vocab_size: int,
        hidden_size: int,
        ffn_hidden_size: int,
        num_attention_heads: int,
        max_seq_length: int = 1024,
        embedding_dropout_prob: float = 0.0,
        attention_dropout_prob: float = 0.0,
        output_dropout_prob: float = 0.0,
        layernorm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        use_scaled_init_for_output_weights: bool = True,
        bias_gelu_fusion: bool = False,
        bias_dropout_fusion: bool = False,
        scale_mask_softmax_fusion: bool = False,
        apply_query_key_layer_scaling: bool = False,
        apply_residual_post_layernorm: bool = False,
        amp_enabled: bool = False,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        # The architecture, kept for exporters (e.g. to Hugging Face's config.json).
        self.cfg = dict(
            hidden_layers=hidden_layers,
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            ffn_hidden_size=ffn_hidden_size,
            num_attention_heads=num_attention_heads,
            max_seq_length=max_seq_length,
            embedding_dropout_prob=embedding_dropout_prob,
            attention_dropout_prob=attention_dropout_prob,
            output_dropout_prob=output_dropout_prob,
            layernorm_epsilon=layernorm_epsilon,
            initializer_range=initializer_range,
            apply_residual_post_layernorm=apply_residual_post_layernorm,
            activation=activation,
        )
        init_method = init_method_normal(initializer_range)
        output_layer_init_method = (
            scaled_init_method_normal(initializer_range, hidden_layers)
            if use_scaled_init_for_output_weights
            else init_method
        )
        self.embeddings = TokenPositionEmbedding(
            vocab_size,
            hidden_size,
            max_seq_length,
            init_method=init_method,
            dropout_prob=embedding_dropout_prob,
            amp_enabled=amp_enabled,
            token_table="token_embeddings",  # LiBai's name: GPT_model.embeddings.token_embeddings
            max_positions_key="max_seq_length",
        )
        # The layer's arguments, given once: the stack only adds each layer's index.
        make_layer = partial(
            TransformerLayer,
            hidden_size,
            ffn_hidden_size,
            num_attention_heads,
            attention_dropout_prob=attention_dropout_prob,
            output_dropout_prob=output_dropout_prob,
            layernorm_epsilon=layernorm_epsilon,
            init_method=init_method,
            output_layer_init_method=output_layer_init_method,
            bias_gelu_fusion=bias_gelu_fusion,
            bias_dropout_fusion=bias_dropout_fusion,
            scale_mask_softmax_fusion=scale_mask_softmax_fusion,
            apply_query_key_layer_scaling=apply_query_key_layer_scaling,
            apply_residual_post_layernorm=apply_residual_post_layernorm,
            attn_mask_type=AttnMaskType.causal,
            activation=activation,
        )
        self.transformer = Transformer(
            make_layer, range(hidden_layers), LayerNorm(hidden_size, eps=layernorm_epsilon, layer_idx=-1)
        )
        self.lm_head = LMLogits(vocab_size, bias=False)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """`__init__` arguments read from a LiBai GPT config (configs/common/models/gpt.py)."""
        return init_kwargs_from_config(cls.__init__, cfg, "GPTModel")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        past_key_values: Optional[KVCache] = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ):
        """Vocabulary-parallel logits [b, s, vocab_size / tp] of `input_ids` [b, s].

        For decoding: `attention_mask` [b, past + s] (1 = attend, e.g. 0 on left padding),
        `position_ids` [b, s] (default: after the cached positions), `past_key_values` a
        `KVCache` holding the past positions (updated in place), `logits_to_keep` > 0 for
        the logits of the last positions only (generation needs one). With `use_cache=True`
        returns `(logits, cache)`, making a new cache when none is given.
        """
        if use_cache and past_key_values is None:
            past_key_values = KVCache()
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        hidden_states = self.embeddings(input_ids, past_length, position_ids)
        hidden_states = self.transformer(hidden_states, _keep_mask(attention_mask), past_key_values)
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states, self.embeddings.token_embeddings.weight)
        return (logits, past_key_values) if use_cache else logits


def _keep_mask(attention_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A [b, k] padding mask (1 = attend) as a boolean [b, 1, 1, k] keep-mask; None stays None."""
    if attention_mask is None:
        return None
    mask = to_local(attention_mask)
    if mask.dim() != 2:
        raise ValueError(f"GPT attention_mask must be [batch, key_length] (1 = attend), got shape {tuple(mask.shape)}")
    mask = mask if mask.dtype == torch.bool else mask > 0
    return mask[:, None, None, :]


class GPTLoss(nn.Module):
    """Mean over tokens of the vocabulary-parallel cross entropy: `{"lm_loss": loss}`."""

    def __init__(self) -> None:
        super().__init__()
        self.lm_loss = ParallelCrossEntropyLoss()

    def forward(self, logits: torch.Tensor, lm_labels: torch.Tensor) -> dict:
        """`logits` [b, s, vocab / tp] (this rank's vocabulary slice), `lm_labels` [b, s]."""
        return {"lm_loss": self.lm_loss(logits, lm_labels).mean()}


class GPTForPreTraining(nn.Module, GenerationMixin):
    """GPT-2 with its language-modelling loss (LiBai's `GPTForPreTraining(cfg)`), and
    `generate()` (see `libai.inference.generation`).

    `forward(input_ids, labels=None, attention_mask=None, position_ids=None,
    past_key_values=None, use_cache=False)`: in training with labels, `{"lm_loss": mean
    loss}`; in evaluation with labels, `{"lm_loss": per-token losses [b, s]}` (what
    PPLEvaluator reads); without labels, `{"prediction_scores": logits}` with the full
    vocabulary on every rank (of the last `logits_to_keep` positions when > 0), plus
    `"past_key_values"` (the `KVCache`) with `use_cache`.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.GPT_model = GPTModel(cfg)
        self.loss_func = GPTLoss()

    @property
    def generation_max_positions(self) -> int:
        """The number of positions the model can attend over (`max_seq_length`)."""
        return self.GPT_model.embeddings.max_positions

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        past_key_values: Optional[KVCache] = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> dict:
        """See the class docstring."""
        if use_cache or past_key_values is not None:
            logits, cache = self.GPT_model(
                input_ids, attention_mask, position_ids, past_key_values, use_cache=True, logits_to_keep=logits_to_keep
            )
            return {"prediction_scores": dist.gather_from_tensor_parallel_region(logits), "past_key_values": cache}
        logits = self.GPT_model(input_ids, attention_mask, position_ids, logits_to_keep=logits_to_keep)
        if labels is not None and self.training:
            return self.loss_func(logits, to_local(labels))
        if labels is not None:
            # Per-token losses for PPLEvaluator, without gathering the vocabulary.
            return {"lm_loss": self.loss_func.lm_loss(logits, to_local(labels))}
        return {"prediction_scores": dist.gather_from_tensor_parallel_region(logits)}
