"""Llama (Llama 2 / 3 and the models that share its design), built only from `libai.layers`.

Token embeddings split over the vocabulary, `hidden_layers` decoder layers (RMSNorm, causal
grouped-query attention with rotary positions, RMSNorm, SwiGLU), a final RMSNorm and an LM
head (its own, or tied to the token embeddings). Parameter names follow Hugging Face's
`LlamaForCausalLM` (`model.layers.N.self_attn.q_proj.weight`, ...), so its checkpoints map
one to one.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from libai.config import configurable
from libai.inference.generation import GenerationMixin
from libai.layers import (
    GroupedQueryAttention,
    KVCache,
    Linear,
    LMLogits,
    ParallelCrossEntropyLoss,
    RMSLayerNorm,
    RotaryEmbedding,
    SwiGLU,
    VocabEmbedding,
)
from libai.layers.utils import to_local
from libai.utils import distributed as dist

from .utils.config_args import init_kwargs_from_config
from .utils.weight_init import init_method_normal


class LlamaDecoderLayer(nn.Module):
    """`x + attn(norm(x))`, then `x + mlp(norm(x))`: one Llama layer.

    Args:
        make_attention: builds the `GroupedQueryAttention` from `layer_idx`.
        make_mlp: builds the `SwiGLU` from `layer_idx`.
        hidden_size, rms_norm_eps: size and epsilon of the two RMSNorms.
        layer_idx: the layer's index (its pipeline stage).
    """

    def __init__(self, make_attention: Callable, make_mlp: Callable, hidden_size: int, rms_norm_eps: float, *, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = RMSLayerNorm(hidden_size, eps=rms_norm_eps, layer_idx=layer_idx)
        self.self_attn = make_attention(layer_idx=layer_idx)
        self.post_attention_layernorm = RMSLayerNorm(hidden_size, eps=rms_norm_eps, layer_idx=layer_idx)
        self.mlp = make_mlp(layer_idx=layer_idx)
        # Switched on by `enable_activation_checkpointing` (train.activation_checkpoint).
        self.activation_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_embeddings: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        past_key_value: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Run the layer (see `GroupedQueryAttention.forward` for the arguments)."""
        args = (hidden_states, attention_mask, position_embeddings, past_key_value)
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, *args, use_reentrant=False)
        return self._forward(*args)

    def _forward(self, hidden_states, attention_mask, position_embeddings, past_key_value) -> torch.Tensor:
        hidden_states = to_local(hidden_states)
        attended = self.self_attn(
            self.input_layernorm(hidden_states), attention_mask, past_key_value=past_key_value,
            position_embeddings=position_embeddings,
        )
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class LlamaModel(nn.Module):
    """The Llama decoder: `forward(input_ids, ...)` returns the final normalised hidden
    states [b, s, hidden_size], the same on every tensor-parallel rank.

    Args:
        hidden_layers: number of decoder layers.
        vocab_size: vocabulary size (divides by the tensor-parallel size).
        hidden_size, ffn_hidden_size: model and SwiGLU widths.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (grouped-query attention; default: as many).
        head_dim: size of each head (default hidden_size / num_attention_heads).
        max_position_embeddings: the longest sequence (generation's limit).
        rms_norm_eps: RMSNorm epsilon.
        rope_theta, rope_scaling: rotary embeddings (Hugging Face's meaning).
        attention_bias, mlp_bias: biases on the attention and MLP projections.
        initializer_range: std of the normal initialisation.
        tie_word_embeddings: the LM head of `LlamaForCausalLM` reads the token embeddings.
    """

    @configurable
    def __init__(
        self,
        hidden_layers: int,
        vocab_size: int,
        hidden_size: int,
        ffn_hidden_size: int,
        num_attention_heads: int,
        num_key_value_heads: Optional[int] = None,
        head_dim: Optional[int] = None,
        max_position_embeddings: int = 4096,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        rope_scaling: Optional[dict] = None,
        attention_bias: bool = False,
        mlp_bias: bool = False,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = False,
    ) -> None:
        super().__init__()
        kv_heads = num_key_value_heads or num_attention_heads
        # The architecture, kept for exporters (e.g. to Hugging Face's config.json).
        self.cfg = dict(
            hidden_layers=hidden_layers,
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            ffn_hidden_size=ffn_hidden_size,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim or hidden_size // num_attention_heads,
            max_position_embeddings=max_position_embeddings,
            rms_norm_eps=rms_norm_eps,
            rope_theta=rope_theta,
            rope_scaling=dict(rope_scaling) if rope_scaling else None,
            attention_bias=attention_bias,
            mlp_bias=mlp_bias,
            initializer_range=initializer_range,
            tie_word_embeddings=tie_word_embeddings,
        )
        init_method = init_method_normal(initializer_range)
        self.embed_tokens = VocabEmbedding(
            vocab_size, hidden_size, init_method=init_method, tied_to_lm_head=tie_word_embeddings, layer_idx=0
        )
        make_attention = partial(
            GroupedQueryAttention,
            hidden_size,
            num_attention_heads,
            kv_heads,
            head_size=self.cfg["head_dim"],
            rope_theta=rope_theta,
            rope_scaling=self.cfg["rope_scaling"],
            bias=attention_bias,
            init_method=init_method,
        )
        make_mlp = partial(SwiGLU, hidden_size, ffn_hidden_size, bias=mlp_bias, init_method=init_method)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(make_attention, make_mlp, hidden_size, rms_norm_eps, layer_idx=i) for i in range(hidden_layers)
        )
        self.norm = RMSLayerNorm(hidden_size, eps=rms_norm_eps, layer_idx=-1)
        # The rotation angles, computed once per forward for every layer (no parameters).
        self.rotary_emb = RotaryEmbedding(self.cfg["head_dim"], rope_theta, self.cfg["rope_scaling"])

    @classmethod
    def from_config(cls, cfg) -> dict:
        """`__init__` arguments read from a Llama config (configs/common/models/llama.py)."""
        return init_kwargs_from_config(cls.__init__, cfg, "LlamaModel")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        past_key_values: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Hidden states [b, s, hidden_size] of `input_ids` [b, s].

        `attention_mask`: [b, past + s] padding (1 = attend), or [b, 1, s, past + s] /
        [b, s, past + s] to say which keys each query may see (e.g. packed samples); the
        causal mask always applies too. `position_ids` [b, s] default to past + 0..s-1;
        `past_key_values` is a `KVCache` (updated in place).
        """
        hidden_states = self.embed_tokens(input_ids)
        if position_ids is None:
            # Read before any layer runs: each layer appends its new positions to the cache.
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            # On input_ids' device, except on a later pipeline stage, where input_ids (placed
            # on the first stage) is a meta stand-in: there on the CPU, and each attention
            # layer moves them to its own device.
            device = to_local(input_ids).device
            batch, length = input_ids.shape[:2]
            device = torch.device("cpu") if device.type == "meta" else device
            position_ids = torch.arange(past, past + length, device=device).expand(batch, length)
        mask = _keep_mask(attention_mask)
        # float32 cos and sin; each attention casts them to its dtype and device.
        position_embeddings = self.rotary_emb.cos_sin(to_local(position_ids), torch.float32)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, position_embeddings, past_key_values)
        return self.norm(hidden_states)


def _keep_mask(attention_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A padding mask [b, k] as [b, 1, 1, k], a per-query mask [b, q, k] as [b, 1, q, k]."""
    if attention_mask is None:
        return None
    mask = to_local(attention_mask)
    if mask.dim() == 2:
        return mask[:, None, None, :]
    if mask.dim() == 3:
        return mask[:, None]
    if mask.dim() == 4:
        return mask
    raise ValueError(f"Llama attention_mask must be [batch, keys], [batch, queries, keys] or [batch, 1, queries, keys], got {tuple(mask.shape)}")


class LlamaForCausalLM(nn.Module, GenerationMixin):
    """Llama with its language-modelling head and loss, and `generate()`.

    `forward(input_ids, labels=None, attention_mask=None, position_ids=None,
    past_key_values=None, use_cache=False, logits_to_keep=0, loss_mask=None)`: in
    training with labels, `{"lm_loss": mean loss}` (over the tokens `loss_mask` marks, when
    given); in evaluation with labels, `{"lm_loss": per-token losses [b, s]}` (what
    `PPLEvaluator` reads); without labels, `{"prediction_scores": logits}` over the full
    vocabulary on every rank, plus `"past_key_values"` with `use_cache`.

    Args:
        cfg: LlamaModel's arguments (`tie_word_embeddings`: the LM head reads the token
            embeddings; default False, as Llama).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.model = LlamaModel(cfg)
        self.tie_word_embeddings = self.model.cfg["tie_word_embeddings"]
        vocab_size, hidden_size = self.model.cfg["vocab_size"], self.model.cfg["hidden_size"]
        if self.tie_word_embeddings:
            self.lm_head = LMLogits(vocab_size, bias=False)
        else:
            self.lm_head = Linear(
                hidden_size, vocab_size, bias=False, parallel="col",
                init_method=init_method_normal(self.model.cfg["initializer_range"]), layer_idx=-1,
            )
        self.loss_func = ParallelCrossEntropyLoss()

    @property
    def generation_max_positions(self) -> int:
        """The number of positions the model was built for (`max_position_embeddings`)."""
        return self.model.cfg["max_position_embeddings"]

    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Vocabulary-parallel logits [..., vocab / tp] of `hidden_states`."""
        if self.tie_word_embeddings:
            return self.lm_head(hidden_states, self.model.embed_tokens.weight)
        return self.lm_head(hidden_states)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        past_key_values: Optional[KVCache] = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        loss_mask: Optional[torch.Tensor] = None,
    ) -> dict:
        """See the class docstring."""
        if use_cache and past_key_values is None:
            past_key_values = KVCache()
        hidden_states = self.model(input_ids, attention_mask, position_ids, past_key_values)
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.logits(hidden_states)
        if labels is not None:
            losses = self.loss_func(logits, to_local(labels))
            if not self.training:
                return {"lm_loss": losses}
            if loss_mask is None:
                return {"lm_loss": losses.mean()}
            mask = to_local(loss_mask).to(losses.dtype)
            return {"lm_loss": (losses * mask).sum() / mask.sum().clamp(min=1)}
        outputs = {"prediction_scores": dist.gather_from_tensor_parallel_region(logits)}
        if use_cache:
            outputs["past_key_values"] = past_key_values
        return outputs
