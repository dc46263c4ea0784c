"""Two backbones for `GenerativePixels`, built only from `libai.layers`, with one contract:

    backbone(input_ids [b, s], position_ids=None, past_key_values=None) -> hidden [b, s, hidden_size]

causal (position t sees positions <= t), normalised at the end, the same on every
tensor-parallel rank. Both take (vocab_size, max_positions, hidden_size, num_layers) first,
so a config swaps one for the other by its `_target_` alone. `supports_cache` says whether
`past_key_values` (a `KVCache`, for fast generation) is understood.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from libai.layers import AttnMaskType, KVCache, LayerNorm, Linear, TokenPositionEmbedding, TransformerLayer
from libai.layers.utils import to_local
from libai.models.gpt_model import Transformer
from libai.models.utils.weight_init import init_method_normal, scaled_init_method_normal


def _padded(vocab_size: int, multiple: int = 8) -> int:
    # The embedding table is split over tensor-parallel ranks: a table padded to a multiple
    # of 8 splits over 1, 2, 4 or 8 of them (Megatron's make_vocab_size_divisible_by).
    return int(math.ceil(vocab_size / multiple) * multiple)


class PixelBackbone(nn.Module):
    """What both backbones share: `embeddings` (a `TokenPositionEmbedding`), and the
    contract of the module docstring."""

    supports_cache: bool = False

    @property
    def max_positions(self) -> int:
        """The longest sequence the position table covers."""
        return self.embeddings.max_positions


class PixelTransformer(PixelBackbone):
    """GPT-2's decoder (iGPT's backbone): token and position embeddings, `num_layers`
    causal pre-LN transformer layers, a final LayerNorm.

    Args:
        vocab_size: input ids (pixel clusters plus the start token).
        max_positions: the longest sequence.
        hidden_size, num_layers: width and depth.
        num_attention_heads: attention heads (divide by the tensor-parallel size).
        ffn_hidden_size: MLP width (default 4 x hidden_size).
        dropout_prob: dropout on embeddings, attention and layer outputs.
        initializer_range: std of the normal initialisation (output projections scaled
            by 1 / sqrt(2 * num_layers), as GPT-2).
    """

    supports_cache = True

    def __init__(
        self,
        vocab_size: int,
        max_positions: int,
        hidden_size: int = 64,
        num_layers: int = 4,
        num_attention_heads: int = 4,
        ffn_hidden_size: Optional[int] = None,
        dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        init_method = init_method_normal(initializer_range)
        self.embeddings = TokenPositionEmbedding(
            _padded(vocab_size), hidden_size, max_positions, init_method=init_method, dropout_prob=dropout_prob,
            tied_to_lm_head=False,  # the task has its own pixel head
        )
        make_layer = partial(
            TransformerLayer,
            hidden_size,
            ffn_hidden_size or 4 * hidden_size,
            num_attention_heads,
            attention_dropout_prob=dropout_prob,
            output_dropout_prob=dropout_prob,
            init_method=init_method,
            output_layer_init_method=scaled_init_method_normal(initializer_range, num_layers),
            attn_mask_type=AttnMaskType.causal,
        )
        self.transformer = Transformer(make_layer, range(num_layers), LayerNorm(hidden_size, layer_idx=-1))

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: Optional[torch.Tensor] = None,
        past_key_values: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Hidden states [b, s, hidden_size] (see the module docstring)."""
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        hidden_states = self.embeddings(input_ids, past_length, position_ids)
        return self.transformer(hidden_states, None, past_key_values)


class CausalConvBlock(nn.Module):
    """`x + W2 gelu(W1 [x_t, x_{t-d}, x_{t-2d}, ...])` on the LayerNorm of x: a dilated
    causal convolution over the sequence (WaveNet's), as a column-parallel W1 over the
    `kernel_size` shifted copies and a row-parallel W2 (one all-reduce, like an MLP)."""

    def __init__(
        self, hidden_size: int, ffn_hidden_size: int, kernel_size: int, dilation: int, init_method, output_init_method, *, layer_idx: int
    ) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.layer_idx = layer_idx
        self.norm = LayerNorm(hidden_size, layer_idx=layer_idx)
        self.dense_in = Linear(hidden_size * kernel_size, ffn_hidden_size, parallel="col", init_method=init_method, layer_idx=layer_idx)
        self.dense_out = Linear(ffn_hidden_size, hidden_size, parallel="row", init_method=output_init_method, layer_idx=layer_idx)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[b, s, h] -> [b, s, h]; position t reads positions t, t-d, ..., t-(k-1)d only."""
        hidden_states = to_local(hidden_states)
        normed = self.norm(hidden_states)
        # Shift right by j*d (zeros enter at the start): tap j sees position t - j*d.
        taps = [F.pad(normed, (0, 0, j * self.dilation, 0))[:, : normed.shape[1]] for j in range(self.kernel_size)]
        return hidden_states + self.dense_out(F.gelu(self.dense_in(torch.cat(taps, dim=-1))))


class CausalConvNet(PixelBackbone):
    """A stack of dilated causal convolutions (dilations 1, 2, 4, ... restarting every
    `dilation_cycle` layers) over token and position embeddings, then a LayerNorm: a
    second, attention-free backbone. Its receptive field is
    1 + (kernel_size - 1) * sum(dilations) positions; it keeps no cache (generation
    recomputes the sequence each step).

    Args:
        vocab_size, max_positions, hidden_size, num_layers: as `PixelTransformer`.
        kernel_size: taps per convolution.
        dilation_cycle: layers per dilation cycle.
        ffn_hidden_size: width inside each block (default 2 x hidden_size).
        initializer_range: std of the normal initialisation.
    """

    supports_cache = False

    def __init__(
        self,
        vocab_size: int,
        max_positions: int,
        hidden_size: int = 64,
        num_layers: int = 6,
        kernel_size: int = 3,
        dilation_cycle: int = 6,
        ffn_hidden_size: Optional[int] = None,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        init_method = init_method_normal(initializer_range)
        output_init_method = scaled_init_method_normal(initializer_range, num_layers)
        self.embeddings = TokenPositionEmbedding(
            _padded(vocab_size), hidden_size, max_positions, init_method=init_method, tied_to_lm_head=False
        )
        self.layers = nn.ModuleList(
            CausalConvBlock(
                hidden_size,
                ffn_hidden_size or 2 * hidden_size,
                kernel_size,
                2 ** (i % dilation_cycle),
                init_method,
                output_init_method,
                layer_idx=i,
            )
            for i in range(num_layers)
        )
        self.layernorm_f = LayerNorm(hidden_size, layer_idx=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: Optional[torch.Tensor] = None,
        past_key_values: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Hidden states [b, s, hidden_size] (see the module docstring)."""
        if past_key_values is not None:
            raise ValueError("CausalConvNet keeps no cache: call it with the whole sequence (use_cache=False)")
        hidden_states = self.embeddings(input_ids, 0, position_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.layernorm_f(hidden_states)
