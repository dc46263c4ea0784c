"""Multi-head self and cross attention, with heads split over tensor-parallel ranks."""
from __future__ import annotations

import enum
import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from libai.utils import distributed as dist
from libai.utils.logger import log_ignored_arguments

from .kv_cache import KVCache
from .linear import Linear
from .rotary import RotaryEmbedding, apply_rotary
from .utils import InitMethod, check_divisible, mesh_rank, mesh_size, to_local, tp_mesh

KeyValue = tuple[torch.Tensor, torch.Tensor]


class AttnMaskType(enum.Enum):
    """Which mask an attention layer applies by itself: none beyond the given one, or causal."""

    padding = 1
    causal = 2


def keep_mask(
    attention_mask: Optional[torch.Tensor], tgt_len: int, src_len: int, causal: bool, device: torch.device
) -> Optional[torch.Tensor]:
    """The boolean keep-mask (True = attend) of `attention_mask` (1 / True = attend,
    broadcastable to [b, heads, q, k]) and, when `causal`, of the causal mask, or None.

    The causal mask is aligned to the last query: with a cache of past keys, query i sits
    at position src_len - tgt_len + i.
    """
    mask = None
    if attention_mask is not None:
        mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask > 0.5
    if causal:
        lower = torch.ones(tgt_len, src_len, dtype=torch.bool, device=device).tril(src_len - tgt_len)
        mask = lower if mask is None else mask & lower
    return mask


def sdpa_mask(
    attention_mask: Optional[torch.Tensor], tgt_len: int, src_len: int, causal: bool, device: torch.device
) -> tuple[Optional[torch.Tensor], bool]:
    """`(attn_mask, is_causal)` for `F.scaled_dot_product_attention`.

    When the only mask is causal and queries and keys have the same length (training, or a
    prompt without a cache), SDPA's own `is_causal=True` and no mask tensor: no [q, k]
    mask is built per layer, and on CUDA the flash kernel, which takes no mask, can run.
    Otherwise the `keep_mask`. (The results are equal: on one CPU thread the two forms
    give identical outputs at the same speed.)
    """
    if causal and attention_mask is None and tgt_len == src_len:
        return None, True
    return keep_mask(attention_mask, tgt_len, src_len, causal, device), False


class MultiheadAttention(nn.Module):
    """LiBai's multi-head attention: self attention (fused QKV) or cross attention.

    Self attention projects with ONE column-parallel `query_key_value` (hidden -> 3 * hidden)
    whose output columns are laid out per head, `[num_heads, 3, head_size]` (q, k, v of head
    0, then of head 1, ...), so splitting the columns over tensor-parallel ranks gives each
    rank whole heads. Cross attention uses `query` (col) and `key_value` (col, laid out
    `[num_heads, 2, head_size]`). The row-parallel `dense` output projection sums the heads'
    contributions over ranks, so the output is replicated over tensor-parallel ranks.

    Masks follow LiBai: `attention_mask` holds 1 to attend and 0 to mask, and broadcasts to
    [batch, heads, tgt_len, src_len] (e.g. [b, 1, 1, k] or [b, 1, q, k]); with
    `attn_mask_type=AttnMaskType.causal` a causal mask is applied as well (aligned to the
    last query, so it also holds when decoding with `past_key_value`). A query row whose
    keys are all masked gives zeros.

    `apply_query_key_layer_scaling` and the fusion switches are accepted for LiBai
    compatibility: in LiBai they change only how fp16 numbers are formed, not the result,
    and `F.scaled_dot_product_attention` already scales inside its kernel.

    Args:
        hidden_size: size of the hidden states.
        num_attention_heads: number of heads (must divide by the tensor-parallel size).
        is_cross_attention: keys and values come from `encoder_states`.
        attention_dropout_prob: dropout on the attention probabilities.
        output_dropout_prob: dropout on the output.
        init_method: initialiser of the input projections' weights.
        output_layer_init_method: initialiser of `dense`'s weight (default: init_method).
        bias_dropout_fusion, scale_mask_softmax_fusion, apply_query_key_layer_scaling: see above.
        attn_mask_type: `AttnMaskType.padding` (only the given mask) or `.causal`.
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        is_cross_attention: bool = False,
        attention_dropout_prob: float = 0.0,
        output_dropout_prob: float = 0.0,
        init_method: InitMethod = nn.init.xavier_normal_,
        output_layer_init_method: Optional[InitMethod] = None,
        bias_dropout_fusion: bool = False,
        scale_mask_softmax_fusion: bool = False,
        apply_query_key_layer_scaling: bool = False,
        attn_mask_type: AttnMaskType = AttnMaskType.padding,
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        # Checked before any weight is drawn: each rank must hold whole heads.
        check_divisible(num_attention_heads, mesh_size(tp_mesh(layer_idx)), "MultiheadAttention num_attention_heads")
        switches = dict(
            bias_dropout_fusion=bias_dropout_fusion,
            scale_mask_softmax_fusion=scale_mask_softmax_fusion,
            apply_query_key_layer_scaling=apply_query_key_layer_scaling,
        )
        log_ignored_arguments(
            "MultiheadAttention",
            "they change how LiBai forms fp16 numbers, not the result; scaled_dot_product_attention scales in its kernel",
            **{name: value for name, value in switches.items() if value},
        )
        if output_layer_init_method is None:
            output_layer_init_method = init_method
        self.hidden_size = hidden_size
        self.num_heads = num_attention_heads
        self.head_size = hidden_size // num_attention_heads
        self.is_cross_attention = is_cross_attention
        self.attention_dropout_prob = attention_dropout_prob
        self.bias_dropout_fusion = bias_dropout_fusion
        self.scale_mask_softmax_fusion = scale_mask_softmax_fusion
        self.apply_query_key_layer_scaling = apply_query_key_layer_scaling
        self.attn_mask_type = attn_mask_type
        self.layer_idx = layer_idx
        self.norm_factor = 1.0 / math.sqrt(self.head_size)

        def col(out_features: int) -> Linear:
            return Linear(hidden_size, out_features, parallel="col", init_method=init_method, layer_idx=layer_idx)

        if is_cross_attention:
            self.query = col(hidden_size)
            self.key_value = col(2 * hidden_size)
        else:
            self.query_key_value = col(3 * hidden_size)
        self.dense = Linear(
            hidden_size,
            hidden_size,
            parallel="row",
            init_method=output_layer_init_method,
            skip_bias_add=bias_dropout_fusion,
            layer_idx=layer_idx,
        )
        self.tp_size = self.dense.tp_size
        self.local_heads = num_attention_heads // self.tp_size
        self.head_start = self.dense.tp_rank * self.local_heads
        self.dropout = nn.Dropout(attention_dropout_prob)
        self.output_dropout = nn.Dropout(output_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_value: Optional[KeyValue] = None,
        use_cache: bool = False,
    ) -> Union[torch.Tensor, tuple[torch.Tensor, KeyValue]]:
        """Attend from `hidden_states` [b, q, hidden] to itself or to `encoder_states` [b, k, hidden].

        `past_key_value` holds this rank's cached (key, value), each [b, local_heads, len,
        head_size]; with `use_cache=True` the result is `(output, (key, value))`. It may
        instead be a `KVCache`, which self attention updates in place (under this layer's
        `layer_idx`); the result is then the output alone, whatever `use_cache` says.
        """
        hidden_states = to_local(hidden_states)
        if isinstance(past_key_value, KVCache):
            if self.is_cross_attention:
                raise ValueError("a KVCache holds self-attention keys; cross attention takes a (key, value) past")
            use_cache = False  # the cache object is the present
        query, key, value = self._project(hidden_states, to_local(encoder_states), past_key_value)
        present = (key, value) if use_cache else None
        mask, is_causal = self._build_mask(to_local(attention_mask), query.shape[2], key.shape[2], query.device)
        context = self._attend(query, key, value, mask, is_causal)
        # [b, heads, q, head_size] -> [b, q, heads * head_size]: this rank's slice of hidden.
        output = self.dense(context.transpose(1, 2).flatten(2))
        if self.bias_dropout_fusion:
            output, bias = output
            output = output + bias
        output = self.output_dropout(output)
        return (output, present) if use_cache else output

    def _heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """Split a projection laid out [b, s, heads, parts, head_size] into `parts` [b, heads, s, d]."""
        x = x.view(x.shape[0], x.shape[1], self.local_heads, parts * self.head_size).permute(0, 2, 1, 3)
        return x.chunk(parts, dim=-1)

    def _project(self, hidden_states, encoder_states, past_key_value):
        if self.is_cross_attention:
            (query,) = self._heads(self.query(hidden_states), 1)
            if past_key_value is not None:
                # Cross-attention keys and values depend only on the encoder: reuse them.
                key, value = past_key_value
            elif encoder_states is not None:
                key, value = self._heads(self.key_value(encoder_states), 2)
            else:
                raise ValueError("cross attention needs encoder_states or past_key_value")
            return query, key, value
        query, key, value = self._heads(self.query_key_value(hidden_states), 3)
        if isinstance(past_key_value, KVCache):
            key, value = past_key_value.update(self.layer_idx, key, value)
        elif past_key_value is not None:
            past_key, past_value = past_key_value
            key = torch.cat((past_key.to(key.dtype), key), dim=2)
            value = torch.cat((past_value.to(value.dtype), value), dim=2)
        return query, key, value

    def _build_mask(self, attention_mask, tgt_len: int, src_len: int, device) -> tuple[Optional[torch.Tensor], bool]:
        """A boolean keep-mask broadcastable to [b, local_heads, q, k] (or None), and whether
        SDPA should apply the causal mask itself (`sdpa_mask`)."""
        if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] == self.num_heads and self.tp_size > 1:
            # A per-head mask: keep this rank's heads.
            attention_mask = attention_mask[:, self.head_start : self.head_start + self.local_heads]
        return sdpa_mask(attention_mask, tgt_len, src_len, self.attn_mask_type == AttnMaskType.causal, device)

    def _attend(self, query, key, value, mask, is_causal: bool) -> torch.Tensor:
        if self.training and self.attention_dropout_prob > 0.0:
            if is_causal:
                mask = keep_mask(None, query.shape[2], key.shape[2], True, query.device)
            return self._attend_with_dropout(query, key, value, mask)
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, is_causal=is_causal, scale=self.norm_factor
        )

    def _attend_with_dropout(self, query, key, value, mask) -> torch.Tensor:
        """Attention with dropout drawn for ALL heads, each rank keeping its heads' part.

        Every tensor-parallel rank draws the same numbers (same RNG state), so the heads get
        independent masks and the result equals the one-process layer's for the same seed.
        """
        scores = torch.matmul(query, key.transpose(-1, -2)) * self.norm_factor
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1)
        if mask is not None:
            # Rows with every key masked attend to nothing, as in the SDPA path.
            probs = probs * mask.any(dim=-1, keepdim=True)
        b, _, q, k = probs.shape
        p = self.attention_dropout_prob
        noise = torch.rand(b, self.num_heads, q, k, device=probs.device)
        keep = noise[:, self.head_start : self.head_start + self.local_heads] >= p
        probs = probs * keep / (1.0 - p)
        return torch.matmul(probs, value)

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, "
            f"is_cross_attention={self.is_cross_attention}"
        )


class GroupedQueryAttention(nn.Module):
    """Llama's causal self attention: rotary positions and grouped-query heads (GQA), each
    key/value head shared by `num_attention_heads / num_key_value_heads` query heads.

    `q_proj`, `k_proj` and `v_proj` are column-parallel, so each tensor-parallel rank holds
    whole query heads and the key/value heads of their groups. With fewer key/value heads
    than tp ranks (the tp size a multiple of `num_key_value_heads`), `k_proj` and `v_proj`
    are replicated instead, as in Megatron: every rank computes all key/value heads and
    keeps the one its query heads share, and their gradients are summed over tp ranks. Any
    other count gives a `ValueError` naming the sizes that work. `o_proj` is row-parallel:
    the output is replicated over tp ranks. Weights are laid out as
    Hugging Face's `LlamaAttention` (rows of head 0, then head 1, ...), so they load as they are.
    A `KVCache` stores the key/value heads only (not repeated per query head).

    Args:
        hidden_size: size of the hidden states.
        num_attention_heads: query heads (divide by the tp size).
        num_key_value_heads: key/value heads (divide num_attention_heads; default: as many).
        head_size: size of each head (default hidden_size / num_attention_heads).
        rope_theta, rope_scaling: see `RotaryEmbedding`.
        bias: biases on q/k/v/o (Hugging Face's `attention_bias`).
        init_method: initialiser of the q/k/v weights.
        output_layer_init_method: initialiser of o_proj's weight (default: init_method).
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        hidden_size: int,
        num_attention_heads: int,
        num_key_value_heads: Optional[int] = None,
        head_size: Optional[int] = None,
        rope_theta: float = 10000.0,
        rope_scaling: Optional[dict] = None,
        bias: bool = False,
        init_method: InitMethod = nn.init.xavier_normal_,
        output_layer_init_method: Optional[InitMethod] = None,
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        kv_heads = num_key_value_heads or num_attention_heads
        if num_attention_heads % kv_heads:
            raise ValueError(
                f"num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            )
        mesh = tp_mesh(layer_idx)
        tp_size = mesh_size(mesh)
        check_divisible(num_attention_heads, tp_size, "GroupedQueryAttention num_attention_heads")
        if kv_heads % tp_size and tp_size % kv_heads:
            raise ValueError(
                f"num_key_value_heads={kv_heads} cannot be split over {tp_size} tensor-parallel ranks "
                f"nor replicated on them: use a train.dist.tensor_parallel_size that divides {kv_heads} "
                f"or is a multiple of it"
            )
        self.num_heads, self.num_kv_heads = num_attention_heads, kv_heads
        self.head_size = head_size or hidden_size // num_attention_heads
        self.local_heads = num_attention_heads // tp_size
        # Replicated key/value heads: this rank keeps the one of its query heads' group.
        self.replicate_kv = kv_heads < tp_size
        self.local_kv_heads = 1 if self.replicate_kv else kv_heads // tp_size
        self.kv_head_index = mesh_rank(mesh) * self.local_heads // (num_attention_heads // kv_heads)
        self.layer_idx = layer_idx

        def proj(heads: int, parallel: str) -> Linear:
            return Linear(hidden_size, heads * self.head_size, bias=bias, parallel=parallel, init_method=init_method, layer_idx=layer_idx)

        kv_parallel = "data" if self.replicate_kv else "col"
        self.q_proj = proj(num_attention_heads, "col")
        self.k_proj, self.v_proj = proj(kv_heads, kv_parallel), proj(kv_heads, kv_parallel)
        self.o_proj = Linear(
            num_attention_heads * self.head_size,
            hidden_size,
            bias=bias,
            parallel="row",
            init_method=output_layer_init_method or init_method,
            layer_idx=layer_idx,
        )
        self.rotary = RotaryEmbedding(self.head_size, rope_theta, rope_scaling)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        past_key_value: Optional[KVCache] = None,
        position_embeddings: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Attend causally over `hidden_states` [b, s, hidden] (and the cached past).

        `attention_mask` (1 = attend) broadcasts to [b, heads, q, past + q] (e.g. [b, 1, 1, k]
        for padding, [b, 1, q, k] to keep packed samples apart); `past_key_value` is a
        `KVCache`, updated in place; `position_ids` [b, s] default to past + 0..s-1, where
        past is read from the cache, so a model whose layers share one cache must compute
        them once before its first layer (the later layers would see this step's keys too).
        `position_embeddings`: the (cos, sin) of those positions from
        `RotaryEmbedding.cos_sin`, which a model computes once for all its layers; when
        given, `position_ids` is not read.
        """
        hidden_states = to_local(hidden_states)
        batch, length = hidden_states.shape[:2]
        query = self._heads(self.q_proj(hidden_states), self.local_heads)
        key, value = self._kv_heads(self.k_proj(hidden_states)), self._kv_heads(self.v_proj(hidden_states))
        if position_embeddings is None:
            if position_ids is None:
                past = past_key_value.get_seq_length() if past_key_value is not None else 0
                position_ids = torch.arange(past, past + length, device=hidden_states.device).expand(batch, length)
            position_embeddings = self.rotary.cos_sin(to_local(position_ids).to(query.device), query.dtype)
        query, key = apply_rotary(query, key, *position_embeddings)
        if past_key_value is not None:
            key, value = past_key_value.update(self.layer_idx, key, value)
        mask, is_causal = sdpa_mask(to_local(attention_mask), length, key.shape[2], True, query.device)
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, is_causal=is_causal, scale=self.head_size**-0.5,
            enable_gqa=self.local_kv_heads != self.local_heads,
        )
        return self.o_proj(context.transpose(1, 2).flatten(2))

    def _kv_heads(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's key or value heads [b, local_kv_heads, s, head_size] from k_proj/v_proj."""
        if not self.replicate_kv:
            return self._heads(x, self.local_kv_heads)
        # Every rank computed all heads but uses one: the gradients the ranks send back
        # differ, so their sum (over tp, in backward) is the replicated weights' gradient.
        x = dist.copy_to_tensor_parallel_region(x)
        return self._heads(x, self.num_kv_heads)[:, self.kv_head_index : self.kv_head_index + 1]

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """[b, s, heads * head_size] -> [b, heads, s, head_size]."""
        return x.view(x.shape[0], x.shape[1], heads, self.head_size).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, head_size={self.head_size}"
