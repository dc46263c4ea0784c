"""T5 in LiBai's (Megatron's) form, built only from `libai.layers`.

LiBai's T5 is not Google's: it has learned absolute position embeddings shared by encoder
and decoder (no relative attention bias), LayerNorm (not RMS norm) with biases, GELU MLPs,
pre-LN encoder and decoder stacks each closed by a final LayerNorm, and an LM head tied to
the word embeddings with a learned bias.

Module names follow LiBai (`t5_model.embedding.word_embeddings`, `t5_model.encoder.layers.N`,
`t5_model.encoder.final_layernorm`, `t5_model.decoder.layers.N`, `t5_model.lm_head`, ...), so
configs and weight converters written for LiBai apply unchanged.

Pipeline parallelism is not supported: every decoder layer reads the encoder output
(cross attention), a skip connection across stages that `libai.engine.pipeline` rejects
with a clear error.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import torch
from torch import nn

from libai.config import configurable
from libai.inference.generation import GenerationMixin
from libai.layers import (
    AttnMaskType,
    LayerNorm,
    LMLogits,
    ParallelCrossEntropyLoss,
    TokenPositionEmbedding,
    TransformerLayer,
)
from libai.layers.utils import to_local
from libai.utils import distributed as dist

from .utils.config_args import init_kwargs_from_config
from .utils.weight_init import init_method_normal, scaled_init_method_normal

# Per decoder layer: (self key, self value, cross key, cross value) as TransformerLayer caches them.
PastKeyValues = list[tuple[torch.Tensor, ...]]


def extended_attn_mask(attention_mask: Optional[torch.Tensor], name: str) -> Optional[torch.Tensor]:
    """A dataset mask [b, q, k] (bool or 0/1, True = attend) -> a boolean keep-mask [b, 1, q, k].

    The head dim lets one mask broadcast over all heads; converting to bool once here saves
    every layer from doing it. A 4-D mask is taken as already extended.
    """
    if attention_mask is None:
        return None
    mask = to_local(attention_mask)
    if mask.dim() not in (3, 4):
        raise ValueError(f"T5 {name} must be [batch, query, key] (1 = attend), got shape {tuple(mask.shape)}")
    mask = mask if mask.dtype == torch.bool else mask > 0.5
    return mask.unsqueeze(1) if mask.dim() == 3 else mask


class T5Stack(nn.Module):
    """T5's encoder or decoder: `layers` (TransformerLayers) then `final_layernorm`.

    Args:
        make_layer: builds one layer from its `layer_idx` (a `functools.partial` of
            `TransformerLayer` holding the model's sizes and switches).
        layer_ids: the layers' `layer_idx`, in call order.
        final_layernorm: the LayerNorm that closes the pre-LN stack.
    """

    def __init__(
        self, make_layer: Callable[..., TransformerLayer], layer_ids: range, final_layernorm: LayerNorm
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList([make_layer(layer_idx=i) for i in layer_ids])
        self.final_layernorm = final_layernorm

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        encoder_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[PastKeyValues] = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Optional[PastKeyValues]]:
        """`(normed output [b, s, hidden], presents)`; `presents` (each layer's cached keys and
        values) is None unless `use_cache`. Encoder arguments are for a decoder stack."""
        past_key_values = past_key_values or [None] * len(self.layers)
        presents = [] if use_cache else None
        for layer, past in zip(self.layers, past_key_values):
            hidden_states = layer(
                hidden_states, attention_mask, encoder_states, encoder_attention_mask, past, use_cache
            )
            if use_cache:
                hidden_states, present = hidden_states
                presents.append(present)
        return self.final_layernorm(hidden_states), presents


class T5Model(nn.Module):
    """LiBai's T5 encoder-decoder: `forward(...)` returns the decoder's LM logits.

    The logits are vocabulary-parallel, [b, s_dec, vocab_size / tp] on each tensor-parallel
    rank, which is what `ParallelCrossEntropyLoss` reads without gathering the vocabulary;
    `T5ForPreTraining` gathers them when it returns them.

    Weights start as in LiBai: normal(0, initializer_range), with the projections into the
    residual stream (attention and MLP outputs) scaled by 1 / sqrt(2 * hidden_layers); the
    LM head's bias starts at zero.

    Encoder layer i has layer_idx i and decoder layer i has hidden_layers + i, so a model
    spans `2 * hidden_layers` layers (set `train.dist.pipeline_num_layers` accordingly).

    Args:
        vocab_size: vocabulary size (must divide by the tensor-parallel size).
        hidden_size, hidden_layers, num_attention_heads, intermediate_size: sizes
            (hidden_layers each for the encoder and the decoder).
        embedding_dropout_prob: dropout on the embeddings.
        hidden_dropout_prob: dropout on each block's outputs.
        attention_probs_dropout_prob: dropout on attention probabilities.
        max_position_embeddings: number of positions (encoder and decoder share the table).
        initializer_range: std of the normal initialisation.
        layernorm_eps: LayerNorm eps.
        bias_gelu_fusion, bias_dropout_fusion, scale_mask_softmax_fusion,
            apply_query_key_layer_scaling: LiBai's kernel switches (same results here).
        apply_residual_post_layernorm: take residuals after the LayerNorms (LiBai option).
        amp_enabled: accepted for LiBai compatibility.
    """

    @configurable
    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        hidden_layers: int,
        num_attention_heads: int,
        intermediate_size: int,
        embedding_dropout_prob: float,
        hidden_dropout_prob: float,
        attention_probs_dropout_prob: float,
        max_position_embeddings: int,
        initializer_range: float = 0.02,
        layernorm_eps: float = 1e-12,
        bias_gelu_fusion: bool = False,
        bias_dropout_fusion: bool = False,
        scale_mask_softmax_fusion: bool = False,
        apply_query_key_layer_scaling: bool = True,
        apply_residual_post_layernorm: bool = False,
        amp_enabled: bool = False,
    ) -> None:
        super().__init__()
        # The architecture, kept for exporters (e.g. to Hugging Face's config.json).
        self.cfg = dict(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            hidden_layers=hidden_layers,
            num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size,
            embedding_dropout_prob=embedding_dropout_prob,
            hidden_dropout_prob=hidden_dropout_prob,
            attention_probs_dropout_prob=attention_probs_dropout_prob,
            max_position_embeddings=max_position_embeddings,
            initializer_range=initializer_range,
            layernorm_eps=layernorm_eps,
            apply_residual_post_layernorm=apply_residual_post_layernorm,
        )
        init_method = init_method_normal(initializer_range)
        # The layer's arguments, given once: each stack only adds its layers' indices.
        make_layer = partial(
            TransformerLayer,
            hidden_size=hidden_size,
            ffn_hidden_size=intermediate_size,
            num_attention_heads=num_attention_heads,
            attention_dropout_prob=attention_probs_dropout_prob,
            output_dropout_prob=hidden_dropout_prob,
            layernorm_epsilon=layernorm_eps,
            init_method=init_method,
            output_layer_init_method=scaled_init_method_normal(initializer_range, hidden_layers),
            bias_gelu_fusion=bias_gelu_fusion,
            bias_dropout_fusion=bias_dropout_fusion,
            scale_mask_softmax_fusion=scale_mask_softmax_fusion,
            apply_query_key_layer_scaling=apply_query_key_layer_scaling,
            apply_residual_post_layernorm=apply_residual_post_layernorm,
        )
        # Modules are created in LiBai's order, which is also the order of the RNG draws.
        self.embedding = TokenPositionEmbedding(
            vocab_size,
            hidden_size,
            max_position_embeddings,
            init_method=init_method,
            dropout_prob=embedding_dropout_prob,
            amp_enabled=amp_enabled,
            token_table="word_embeddings",  # LiBai's name: t5_model.embedding.word_embeddings
            max_positions_key="max_position_embeddings",
        )
        self.encoder = T5Stack(
            make_layer, range(hidden_layers), LayerNorm(hidden_size, eps=layernorm_eps, layer_idx=hidden_layers - 1)
        )
        # The dataset's decoder mask is already causal; the causal mask type also keeps the
        # decoder causal when a caller passes a padding-only mask (e.g. all ones).
        self.decoder = T5Stack(
            partial(make_layer, is_decoder=True, attn_mask_type=AttnMaskType.causal),
            range(hidden_layers, 2 * hidden_layers),
            LayerNorm(hidden_size, eps=layernorm_eps, layer_idx=-1),
        )
        self.lm_head = LMLogits(vocab_size, bias=True)
        self.set_cache(None, None)

    @classmethod
    def from_config(cls, cfg) -> dict:
        """`__init__` arguments read from a LiBai T5 config (configs/common/models/t5.py)."""
        return init_kwargs_from_config(cls.__init__, cfg, "T5Model")

    def forward(
        self,
        encoder_input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        encoder_attn_mask: Optional[torch.Tensor],
        decoder_attn_mask: Optional[torch.Tensor],
        encoder_decoder_attn_mask: Optional[torch.Tensor],
        use_cache: bool = False,
    ) -> torch.Tensor:
        """Vocabulary-parallel logits [b, s_dec, vocab_size / tp].

        Masks (bool or 0/1, 1 = attend): `encoder_attn_mask` [b, s_enc, s_enc],
        `decoder_attn_mask` [b, s_dec, s_dec] and `encoder_decoder_attn_mask` [b, s_dec, s_enc];
        None attends everywhere (the decoder stays causal).

        With `use_cache=True` (incremental decoding, as LiBai): the first call encodes and
        keeps the encoder output, later calls reuse it (`encoder_input_ids` is then ignored)
        and feed only the new decoder tokens, whose masks cover past + new keys. A call
        without `use_cache` clears the cache.
        """
        if use_cache and self.encoder_states is not None:
            encoder_states = self.encoder_states
        else:
            if self.encoder_states is not None or self.past_length:
                self.set_cache(None, None)
            encoder_states = self.encode(encoder_input_ids, encoder_attn_mask)
        decoder_states, presents = self.decoder(
            self.embedding(decoder_input_ids, self.past_length),
            extended_attn_mask(decoder_attn_mask, "decoder_attn_mask"),
            encoder_states,
            extended_attn_mask(encoder_decoder_attn_mask, "encoder_decoder_attn_mask"),
            past_key_values=self.past_key_values,
            use_cache=use_cache,
        )
        if use_cache:
            self.set_cache(encoder_states, presents)
        return self.lm_head(decoder_states, self.embedding.word_embeddings.weight)

    def encode(self, encoder_input_ids: torch.Tensor, encoder_attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The encoder output [b, s_enc, hidden] (after the encoder's final LayerNorm)."""
        mask = extended_attn_mask(encoder_attn_mask, "encoder_attn_mask")
        encoder_states, _ = self.encoder(self.embedding(encoder_input_ids), mask)
        return encoder_states

    def set_cache(self, encoder_states: Optional[torch.Tensor], past_key_values: Optional[PastKeyValues]) -> None:
        """Set (or, with None, clear) the incremental-decoding cache: the encoder output and
        each decoder layer's cached keys and values."""
        if past_key_values is not None and len(past_key_values) != len(self.decoder.layers):
            raise ValueError(
                f"past_key_values has {len(past_key_values)} entries but the decoder has "
                f"{len(self.decoder.layers)} layers"
            )
        # Plain attributes, not buffers: the cache is not part of the state_dict.
        self.encoder_states = encoder_states
        self.past_key_values = past_key_values
        # The self-attention key cache is [b, local_heads, past_length, head_size].
        self.past_length = 0 if past_key_values is None else past_key_values[0][0].shape[2]


class T5Loss(nn.Module):
    """Masked LM loss over the decoder tokens: `{"masked_lm_loss": ...}`.

    In training, `sum(loss * loss_mask) / sum(loss_mask)` (a scalar). In eval, the per-token
    losses times `loss_mask`, [b, s_dec], which `PPLEvaluator` weighs with the batch's
    `loss_mask`. A missing `loss_mask` counts every token.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lm_loss = ParallelCrossEntropyLoss()

    def forward(
        self, logits: torch.Tensor, lm_labels: torch.Tensor, loss_mask: Optional[torch.Tensor] = None
    ) -> dict:
        """`logits` [b, s, vocab / tp] (this rank's vocabulary slice), `lm_labels` and `loss_mask` [b, s]."""
        lm_loss = self.lm_loss(logits, to_local(lm_labels))
        if loss_mask is None:
            mask = torch.ones_like(lm_loss)
        else:
            mask = to_local(loss_mask).to(lm_loss.dtype)
            if mask.shape != lm_loss.shape:
                raise ValueError(
                    f"T5 loss_mask {tuple(mask.shape)} must have the shape of lm_labels {tuple(lm_loss.shape)}"
                )
        masked = lm_loss * mask
        if not self.training:
            return {"masked_lm_loss": masked}
        # clamp: a micro-batch without any counted token gives 0, not 0 / 0.
        return {"masked_lm_loss": masked.sum() / mask.sum().clamp(min=1.0)}


class T5ForPreTraining(nn.Module, GenerationMixin):
    """T5 with its span-corruption loss (LiBai's `T5ForPreTraining(cfg)`), and `generate()`
    (encoder-decoder: `generate(encoder_ids, attention_mask=encoder_mask,
    decoder_start_token_id=bos, ...)` returns decoder ids; see `libai.inference.generation`).

    `forward(encoder_input_ids, decoder_input_ids, encoder_attn_mask, decoder_attn_mask,
    encoder_decoder_attn_mask, lm_labels=None, loss_mask=None)` (the field names of
    `libai.data.datasets.T5Dataset`) returns `{"masked_lm_loss": ...}` when `lm_labels` are
    given (see `T5Loss` for training vs eval) and `{"prediction_scores": logits [b, s_dec,
    vocab_size]}` otherwise.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.t5_model = T5Model(cfg)
        self.loss_func = T5Loss()

    is_encoder_decoder = True

    def set_cache(self, encoder_states: Optional[torch.Tensor], past_key_values: Optional[PastKeyValues]) -> None:
        """Set or clear the incremental-decoding cache (see `T5Model.set_cache`)."""
        self.t5_model.set_cache(encoder_states, past_key_values)

    @property
    def generation_max_positions(self) -> int:
        """The number of positions of the (shared) position table."""
        return self.t5_model.embedding.max_positions

    def new_generation_cache(self, max_length: Optional[int] = None) -> None:
        """T5 keeps its cache inside (LiBai's incremental decoding): clear it, return None."""
        self.set_cache(None, None)
        return None

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Any = None,
        use_cache: bool = True,
        encoder_input_ids: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
    ) -> dict:
        """Forward inputs for decoder ids `input_ids`: the new ones only once the model
        holds a cache; the encoder padding mask [b, s_enc] masks keys of both attentions."""
        past = self.t5_model.past_length if use_cache else 0
        keys = None if encoder_attention_mask is None else (to_local(encoder_attention_mask) > 0)[:, None, :]
        return dict(
            encoder_input_ids=encoder_input_ids,
            decoder_input_ids=input_ids[:, past:],
            encoder_attn_mask=keys,
            decoder_attn_mask=None,
            encoder_decoder_attn_mask=keys,
            use_cache=use_cache,
        )

    def reorder_cache(self, past_key_values: Any, beam_idx: torch.Tensor) -> None:
        """Row i continues the encoder output and decoder past of row `beam_idx[i]`."""
        model = self.t5_model
        if model.encoder_states is None:
            return None
        past = [tuple(t.index_select(0, beam_idx) for t in layer) for layer in model.past_key_values]
        model.set_cache(model.encoder_states.index_select(0, beam_idx), past)
        return None

    def forward(
        self,
        encoder_input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        encoder_attn_mask: Optional[torch.Tensor],
        decoder_attn_mask: Optional[torch.Tensor],
        encoder_decoder_attn_mask: Optional[torch.Tensor],
        lm_labels: Optional[torch.Tensor] = None,
        loss_mask: Optional[torch.Tensor] = None,
        use_cache: bool = False,
    ) -> dict:
        """See the class docstring."""
        logits = self.t5_model(
            encoder_input_ids,
            decoder_input_ids,
            encoder_attn_mask,
            decoder_attn_mask,
            encoder_decoder_attn_mask,
            use_cache=use_cache,
        )
        if lm_labels is not None:
            return self.loss_func(logits, lm_labels, loss_mask)
        return {"prediction_scores": dist.gather_from_tensor_parallel_region(logits)}
