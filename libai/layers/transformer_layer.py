"""One transformer block (encoder or decoder), pre-LN by default, post-LN on request."""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.checkpoint import checkpoint
from torch import nn

from .attention import AttnMaskType, MultiheadAttention
from .droppath import DropPath
from .kv_cache import KVCache
from .layer_norm import LayerNorm
from .mlp import MLP
from .utils import InitMethod, to_local


class TransformerLayer(nn.Module):
    """LiBai's transformer layer: [b, s, hidden] in, [b, s, hidden] out, replicated over tp.

    Pre-LN (default, Megatron): `h = x + attn(ln1(x)); [h = h + cross(ln(h), enc)];
    out = h + mlp(ln2(h))`, sub-modules `input_layernorm`, `self_attention`,
    `post_attention_layernorm`, (`cross_attention`, `post_cross_attention_layernorm`), `mlp`.
    With `apply_residual_post_layernorm=True` the residual is taken after the norm (LiBai).

    Post-LN (`post_layernorm=True`, original BERT / Transformer): `h = LN(x + attn(x));
    [h = LN(h + cross(h, enc))]; out = LN(h + mlp(h))`; the norms are
    `post_attention_layernorm`, (`post_cross_attention_layernorm`) and `output_layernorm`
    (there is no `input_layernorm`).

    Args:
        hidden_size, ffn_hidden_size, num_attention_heads: sizes (heads and ffn size must
            divide by the tensor-parallel size).
        is_decoder: add cross attention over `encoder_states`.
        attention_dropout_prob, output_dropout_prob: dropout probabilities.
        drop_path_prob: stochastic depth on each residual branch.
        layernorm_epsilon: LayerNorm eps.
        init_method, output_layer_init_method: weight initialisers (input / output projections).
        bias_gelu_fusion, bias_dropout_fusion, scale_mask_softmax_fusion,
            apply_query_key_layer_scaling: LiBai switches, same results here.
        apply_residual_post_layernorm: residual from the normed input (pre-LN only).
        attn_mask_type: `AttnMaskType.causal` for a causal self attention.
        post_layernorm: post-LN instead of pre-LN.
        activation: the MLP's GELU, "gelu" (erf) or "gelu_tanh" (GPT-2's approximation).
        layer_idx: index of this layer, which picks its pipeline stage.
    """

    def __init__(
        self,
        hidden_size: int,
        ffn_hidden_size: int,
        num_attention_heads: int,
        is_decoder: bool = False,
        attention_dropout_prob: float = 0.0,
        output_dropout_prob: float = 0.0,
        drop_path_prob: float = 0.0,
        layernorm_epsilon: float = 1e-5,
        init_method: InitMethod = nn.init.xavier_normal_,
        output_layer_init_method: Optional[InitMethod] = None,
        bias_gelu_fusion: bool = False,
        bias_dropout_fusion: bool = False,
        scale_mask_softmax_fusion: bool = False,
        apply_query_key_layer_scaling: bool = False,
        apply_residual_post_layernorm: bool = False,
        attn_mask_type: AttnMaskType = AttnMaskType.padding,
        post_layernorm: bool = False,
        activation: str = "gelu",
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.is_decoder = is_decoder
        self.layer_idx = layer_idx
        self.post_layernorm = post_layernorm
        self.apply_residual_post_layernorm = apply_residual_post_layernorm
        if output_layer_init_method is None:
            output_layer_init_method = init_method

        def layer_norm() -> LayerNorm:
            return LayerNorm(hidden_size, eps=layernorm_epsilon, layer_idx=layer_idx)

        def attention(is_cross_attention: bool) -> MultiheadAttention:
            return MultiheadAttention(
                hidden_size,
                num_attention_heads,
                is_cross_attention=is_cross_attention,
                attention_dropout_prob=attention_dropout_prob,
                output_dropout_prob=output_dropout_prob,
                init_method=init_method,
                output_layer_init_method=output_layer_init_method,
                bias_dropout_fusion=bias_dropout_fusion,
                scale_mask_softmax_fusion=scale_mask_softmax_fusion,
                apply_query_key_layer_scaling=apply_query_key_layer_scaling,
                # Cross attention looks at the whole encoder output.
                attn_mask_type=AttnMaskType.padding if is_cross_attention else attn_mask_type,
                layer_idx=layer_idx,
            )

        self.drop_path = DropPath(drop_path_prob) if drop_path_prob > 0.0 else nn.Identity()
        # Modules are created in LiBai's order, which is also the order of the RNG draws.
        if not post_layernorm:
            self.input_layernorm = layer_norm()
        self.self_attention = attention(False)
        self.post_attention_layernorm = layer_norm()
        if is_decoder:
            self.cross_attention = attention(True)
            self.post_cross_attention_layernorm = layer_norm()
        self.mlp = MLP(
            hidden_size,
            ffn_hidden_size,
            output_dropout_prob,
            init_method,
            output_layer_init_method=output_layer_init_method,
            bias_gelu_fusion=bias_gelu_fusion,
            bias_dropout_fusion=bias_dropout_fusion,
            activation=activation,
            layer_idx=layer_idx,
        )
        if post_layernorm:
            self.output_layernorm = layer_norm()
        # Switched on by `enable_activation_checkpointing` (train.activation_checkpoint).
        self.activation_checkpointing = False

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        encoder_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        past_key_value: Optional[tuple] = None,
        use_cache: bool = False,
    ):
        """Run the layer. `past_key_value` is (k, v) for an encoder layer and (k, v, cross_k,
        cross_v) for a decoder layer; with `use_cache=True` returns `(output, presents)`.
        An encoder layer may instead take a `KVCache`, updated in place (returns the output)."""
        hidden_states = to_local(hidden_states)
        attention_mask = to_local(attention_mask)
        encoder_states = to_local(encoder_states)
        encoder_attention_mask = to_local(encoder_attention_mask)
        self_past, cross_past = self._split_past(past_key_value)
        if isinstance(self_past, KVCache):
            use_cache = False  # updated in place: the output is the only result
        run = self._forward_post_ln if self.post_layernorm else self._forward_pre_ln
        args = (hidden_states, attention_mask, encoder_states, encoder_attention_mask, self_past, cross_past, use_cache)
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            # Keep only the layer's input; backward recomputes the rest (same RNG state).
            return checkpoint(run, *args, use_reentrant=False)
        return run(*args)

    def _split_past(self, past_key_value):
        if past_key_value is None:
            return None, None
        if isinstance(past_key_value, KVCache):
            if self.is_decoder:
                raise ValueError("a decoder layer's past is (k, v, cross_k, cross_v), not a KVCache")
            return past_key_value, None
        expected = 4 if self.is_decoder else 2
        if len(past_key_value) != expected:
            raise ValueError(
                f"past_key_value of a {'decoder' if self.is_decoder else 'encoder'} layer needs "
                f"{expected} tensors, got {len(past_key_value)}"
            )
        return tuple(past_key_value[:2]), (tuple(past_key_value[2:]) if self.is_decoder else None)

    def _forward_pre_ln(self, hidden, mask, enc, enc_mask, self_past, cross_past, use_cache):
        presents = ()
        normed = self.input_layernorm(hidden)
        out = self.self_attention(normed, attention_mask=mask, past_key_value=self_past, use_cache=use_cache)
        if use_cache:
            out, present = out
            presents += present
        hidden = self._residual(normed, hidden) + self.drop_path(out)
        normed = self.post_attention_layernorm(hidden)
        if self.is_decoder:
            out = self.cross_attention(
                normed, enc, attention_mask=enc_mask, past_key_value=cross_past, use_cache=use_cache
            )
            if use_cache:
                out, present = out
                presents += present
            hidden = self._residual(normed, hidden) + self.drop_path(out)
            normed = self.post_cross_attention_layernorm(hidden)
        output = self._residual(normed, hidden) + self.drop_path(self.mlp(normed))
        return (output, presents) if use_cache else output

    def _residual(self, normed: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return normed if self.apply_residual_post_layernorm else hidden

    def _forward_post_ln(self, hidden, mask, enc, enc_mask, self_past, cross_past, use_cache):
        presents = ()
        out = self.self_attention(hidden, attention_mask=mask, past_key_value=self_past, use_cache=use_cache)
        if use_cache:
            out, present = out
            presents += present
        hidden = self.post_attention_layernorm(hidden + self.drop_path(out))
        if self.is_decoder:
            out = self.cross_attention(
                hidden, enc, attention_mask=enc_mask, past_key_value=cross_past, use_cache=use_cache
            )
            if use_cache:
                out, present = out
                presents += present
            hidden = self.post_cross_attention_layernorm(hidden + self.drop_path(out))
        output = self.output_layernorm(hidden + self.drop_path(self.mlp(hidden)))
        return (output, presents) if use_cache else output


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute every layer of `model` that supports it in backward (non-reentrant
    `torch.utils.checkpoint`); returns how many layers were switched. A layer supports it
    by having an `activation_checkpointing` attribute that its forward reads, as
    `TransformerLayer` (and Llama's decoder layer) do."""
    layers = [m for m in model.modules() if hasattr(m, "activation_checkpointing")]
    for layer in layers:
        layer.activation_checkpointing = True
    return len(layers)
