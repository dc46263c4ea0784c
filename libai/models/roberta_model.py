"""RoBERTa in LiBai's form: BERT (`libai.models.bert_model`) with RoBERTa's differences.

What differs from BERT:

* positions count only real tokens and start after the padding id: a token's position is
  `pad_token_id + 1 + (number of non-padding tokens before it)`, and padding tokens get
  position `pad_token_id` (Hugging Face's `create_position_ids_from_input_ids`); the word
  and position tables have `padding_idx=pad_token_id` (1, RoBERTa's `<pad>`);
* one token type (`num_tokentypes=1`), no pooler in the LM models, no sentence-order head;
* the LM head (`lm_head`: dense, GELU, LayerNorm, then the tied word embeddings plus a bias)
  and its masked-LM loss `{"lm_loss"}`.

Everything else (the encoder, masks, the `apply_residual_post_layernorm` switch that gives
the original post-LN model, the parallel layout) is BERT's. Module names follow LiBai
(`roberta.embeddings.vocab_embeddings`, `roberta.encoders.N`, `lm_head.dense`,
`lm_head.layernorm`, `lm_head.lm_logits.bias`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from libai.config import configurable
from libai.layers import Embedding, LMLogits
from libai.layers.utils import InitMethod, to_local
from libai.utils import distributed as dist
from libai.utils.logger import log_ignored_arguments

from .bert_model import (
    BertEmbeddings,
    BertExtendedAttnMask,
    BertLMPredictionHead,
    BertLoss,
    BertModel,
    BertPooler,
)
from .utils.config_args import init_kwargs_from_config
from .utils.weight_init import init_method_normal

__all__ = [
    "RobertaEmbeddings",
    "RobertaPositionEmbedding",
    "RobertaExtendedAttnMask",
    "RobertaPooler",
    "RobertaLoss",
    "RobertaModel",
    "RobertaLMHead",
    "RobertaForPreTraining",
    "RobertaForCausalLM",
    "create_position_ids_from_input_ids",
]


def create_position_ids_from_input_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """RoBERTa's positions [b, s]: `pad_token_id + 1, +2, ...` over the non-padding tokens,
    `pad_token_id` on padding (so padding reads the zero row of the position table)."""
    real = input_ids.ne(pad_token_id).long()
    return torch.cumsum(real, dim=1) * real + pad_token_id


class RobertaExtendedAttnMask(BertExtendedAttnMask):
    """BERT's padding mask (`[b, s]` -> keep-mask `[b, 1, 1, s]`)."""


class RobertaPooler(BertPooler):
    """BERT's pooler: `tanh(dense(hidden[:, 0]))`."""


class RobertaPositionEmbedding(Embedding):
    """The position table, looked up at RoBERTa's positions of `input_ids` unless
    `position_ids` are given. The positions are computed inside this layer (not in the
    embeddings' glue code) so that only its pipeline stage reads the token ids."""

    def __init__(self, num_embeddings: int, embedding_dim: int, pad_token_id: int,
                 init_method: Optional[InitMethod] = nn.init.xavier_normal_, amp_enabled: bool = False) -> None:
        super().__init__(num_embeddings, embedding_dim, pad_token_id, init_method, amp_enabled, layer_idx=0)
        self.pad_token_id = pad_token_id

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Position embeddings [b, s, dim]."""
        if position_ids is None:
            position_ids = create_position_ids_from_input_ids(to_local(input_ids), self.pad_token_id)
        return super().forward(position_ids)


class RobertaEmbeddings(BertEmbeddings):
    """Word + position (+ token-type) embeddings with RoBERTa's positions, then dropout.

    Args:
        vocab_size, hidden_size, max_sequence_length, embedding_dropout_prob,
            num_tokentypes, init_method, amp_enabled: as `BertEmbeddings`.
        pad_token_id: the padding id: the word and position tables' `padding_idx`, and
            the offset of the positions (see `create_position_ids_from_input_ids`).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_sequence_length: int,
        embedding_dropout_prob: float,
        num_tokentypes: int = 0,
        pad_token_id: int = 1,
        init_method: InitMethod = nn.init.xavier_normal_,
        amp_enabled: bool = False,
    ) -> None:
        # The padding row of the word and position tables is zero and never trained.
        super().__init__(
            vocab_size,
            hidden_size,
            max_sequence_length,
            embedding_dropout_prob,
            num_tokentypes=num_tokentypes,
            init_method=init_method,
            amp_enabled=amp_enabled,
            padding_idx=pad_token_id,
        )
        self.pad_token_id = pad_token_id
        # In BERT's slot, with the table BERT's constructor just drew (init_method=None:
        # zeros, no second RNG draw), so the initialisation is BERT's.
        position_table = self.position_embeddings.weight
        self.position_embeddings = RobertaPositionEmbedding(
            max_sequence_length, hidden_size, pad_token_id, init_method=None, amp_enabled=amp_enabled
        )
        self.position_embeddings.weight = position_table

    def forward(
        self,
        input_ids: torch.Tensor,
        tokentype_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Embeddings [b, s, hidden]; positions default to RoBERTa's (from the padding)."""
        input_ids = to_local(input_ids)
        if position_ids is None:
            # The largest position is s + pad_token_id; checked on the shape (no device sync).
            longest = self.max_sequence_length - self.pad_token_id - 1
            if input_ids.shape[-1] > longest:
                raise ValueError(
                    f"RoBERTa input has {input_ids.shape[-1]} tokens but max_position_embeddings="
                    f"{self.max_sequence_length} holds positions for {longest} (they start after "
                    f"pad_token_id={self.pad_token_id}): shorten the sequence"
                )
        embeddings = self.vocab_embeddings(input_ids) + self.position_embeddings(input_ids, position_ids)
        if self.tokentype_embeddings is not None:
            if tokentype_ids is None:
                tokentype_ids = torch.zeros_like(input_ids)
            embeddings = embeddings + self.tokentype_embeddings(to_local(tokentype_ids))
        return self.embedding_dropout(embeddings)


class RobertaLoss(BertLoss):
    """Masked-LM loss `sum(loss * loss_mask) / sum(loss_mask)` as `{"lm_loss": ...}`."""

    def __init__(self) -> None:
        super().__init__(add_binary_head=False)

    def forward(self, lm_output: torch.Tensor, lm_labels: torch.Tensor, loss_mask: Optional[torch.Tensor]) -> dict:
        """`{"lm_loss": ...}`; a missing `loss_mask` counts every token."""
        return super().forward(lm_output, lm_labels, loss_mask, None, None)


class RobertaModel(BertModel):
    """The RoBERTa encoder (LiBai's `RobertaModel`): `forward(input_ids, attention_mask,
    tokentype_ids=None, position_ids=None)` returns `(sequence_output, pooled_output or None)`.

    Arguments are `BertModel`'s plus `pad_token_id` (default 1, RoBERTa's `<pad>`); see the
    module docstring for what differs. With `apply_residual_post_layernorm=True` it
    computes Hugging Face's `RobertaModel` (the loader maps the weights so).
    """

    @configurable
    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        hidden_layers: int,
        num_attention_heads: int,
        intermediate_size: int,
        hidden_dropout_prob: float,
        attention_probs_dropout_prob: float,
        max_position_embeddings: int,
        num_tokentypes: int = 2,
        add_pooling_layer: bool = True,
        initializer_range: float = 0.02,
        layernorm_eps: float = 1e-12,
        pad_token_id: int = 1,
        bias_gelu_fusion: bool = True,
        bias_dropout_fusion: bool = True,
        scale_mask_softmax_fusion: bool = True,
        apply_query_key_layer_scaling: bool = True,
        apply_residual_post_layernorm: bool = False,
        amp_enabled: bool = False,
    ) -> None:
        super().__init__(
            vocab_size,
            hidden_size,
            hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_dropout_prob,
            attention_probs_dropout_prob,
            max_position_embeddings,
            num_tokentypes=num_tokentypes,
            add_pooling_layer=add_pooling_layer,
            initializer_range=initializer_range,
            layernorm_eps=layernorm_eps,
            bias_gelu_fusion=bias_gelu_fusion,
            bias_dropout_fusion=bias_dropout_fusion,
            scale_mask_softmax_fusion=scale_mask_softmax_fusion,
            apply_query_key_layer_scaling=apply_query_key_layer_scaling,
            apply_residual_post_layernorm=apply_residual_post_layernorm,
            amp_enabled=amp_enabled,
        )
        self.cfg["pad_token_id"] = pad_token_id
        init_method = init_method_normal(initializer_range)
        # BERT's embeddings, pooler and mask replaced by RoBERTa's (same registration slots).
        self.embeddings = RobertaEmbeddings(
            vocab_size,
            hidden_size,
            max_position_embeddings,
            hidden_dropout_prob,
            num_tokentypes,
            pad_token_id,
            init_method,
            amp_enabled,
        )
        self.extended_attn_mask = RobertaExtendedAttnMask()
        self.pooler = RobertaPooler(hidden_size, init_method) if add_pooling_layer else None
        # Set by RobertaForCausalLM: each token then attends only to itself and earlier tokens.
        self.is_decoder = False

    @classmethod
    def from_config(cls, cfg) -> dict:
        """`__init__` arguments read from a LiBai RoBERTa config (configs/common/models/roberta.py)."""
        return init_kwargs_from_config(cls.__init__, cfg, "RobertaModel")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        tokentype_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """`(sequence_output, pooled_output)`; `attention_mask` [b, s] holds 1 for tokens, 0 for padding."""
        mask = None if attention_mask is None else self.extended_attn_mask(attention_mask)
        hidden_states = self.embeddings(input_ids, tokentype_ids, position_ids)
        if self.is_decoder:
            length = hidden_states.shape[1]
            causal = torch.ones(length, length, dtype=torch.bool, device=hidden_states.device).tril()
            mask = causal if mask is None else mask & causal
        for layer in self.encoders:
            hidden_states = layer(hidden_states, mask)
        encoder_output = self.final_layernorm(hidden_states)
        pooled_output = self.pooler(encoder_output) if self.pooler is not None else None
        return encoder_output, pooled_output


class RobertaLMHead(BertLMPredictionHead):
    """RoBERTa's LM head: `LayerNorm(gelu(dense(h)))`, then the tied word embeddings plus a
    vocabulary-parallel bias. Returns this rank's vocabulary slice of the scores."""

    def __init__(self, vocab_size: int, hidden_size: int, init_method: InitMethod, layer_norm_eps: float) -> None:
        super().__init__(hidden_size, init_method, layer_norm_eps)
        self.lm_logits = LMLogits(vocab_size, bias=True)

    def forward(self, hidden_states: torch.Tensor, word_embeddings_weight: torch.Tensor) -> torch.Tensor:
        """Vocabulary-parallel scores [b, s, vocab / tp]."""
        return self.lm_logits(super().forward(hidden_states), word_embeddings_weight)


def _lm_backbone(cfg, owner: str) -> RobertaModel:
    """The RoBERTa encoder of an LM model: no pooler (LiBai drops it whatever the config says)."""
    if cfg.get("add_pooling_layer", True):
        log_ignored_arguments(owner, "its LM head reads every token, so it builds no pooler (as LiBai)",
                              add_pooling_layer=True)
    return RobertaModel({**cfg, "add_pooling_layer": False})


def _lm_head(cfg) -> RobertaLMHead:
    return RobertaLMHead(
        cfg["vocab_size"],
        cfg["hidden_size"],
        init_method_normal(cfg.get("initializer_range", 0.02)),
        cfg.get("layernorm_eps", 1e-12),
    )


class RobertaForPreTraining(nn.Module):
    """RoBERTa with the masked-LM head (LiBai's `RobertaForPreTraining(cfg)`).

    `forward(input_ids, attention_mask, tokentype_ids=None, lm_labels=None, loss_mask=None)`
    returns `{"lm_loss"}` (mean over `loss_mask`) in training with labels; in eval with
    labels the per-token `{"lm_loss"}` (for `PPLEvaluator`, which applies `loss_mask`);
    otherwise `{"prediction_scores": [b, s, vocab]}`.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.roberta = _lm_backbone(cfg, type(self).__name__)
        self.lm_head = _lm_head(cfg)
        self.loss_fc = RobertaLoss()

    @property
    def loss_func(self) -> RobertaLoss:
        """The loss (LiBai names it `loss_fc`)."""
        return self.loss_fc

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        tokentype_ids: Optional[torch.Tensor] = None,
        lm_labels: Optional[torch.Tensor] = None,
        loss_mask: Optional[torch.Tensor] = None,
    ) -> dict:
        """See the class docstring."""
        sequence_output, _ = self.roberta(input_ids, attention_mask, tokentype_ids)
        prediction_scores = self.lm_head(sequence_output, self.roberta.word_embeddings_weight())
        if lm_labels is not None and self.training:
            return self.loss_fc(prediction_scores, to_local(lm_labels), loss_mask)
        if lm_labels is not None:
            return {"lm_loss": self.loss_fc.lm_loss(prediction_scores, to_local(lm_labels))}
        return {"prediction_scores": dist.gather_from_tensor_parallel_region(prediction_scores)}


class RobertaForCausalLM(nn.Module):
    """RoBERTa as a causal LM (LiBai's `RobertaForCausalLM(cfg)`; Hugging Face's with
    `is_decoder=True`): each token attends to itself and the tokens before it.

    `forward(input_ids, attention_mask, tokentype_ids=None, position_ids=None, labels=None,
    loss_mask=None)`: with `labels`, token t's scores predict `labels[:, t + 1]`; training
    returns `{"lm_loss"}`, the mean over the shifted `loss_mask` (default: the labels >= 0),
    and eval the per-token losses [b, s - 1]. Without labels `{"prediction_scores"}`.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        self.roberta = _lm_backbone(cfg, type(self).__name__)
        self.roberta.is_decoder = True
        self.lm_head = _lm_head(cfg)
        self.loss_fc = RobertaLoss()

    @property
    def loss_func(self) -> RobertaLoss:
        """The loss (LiBai names it `loss_fc`)."""
        return self.loss_fc

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        tokentype_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        loss_mask: Optional[torch.Tensor] = None,
    ) -> dict:
        """See the class docstring."""
        sequence_output, _ = self.roberta(input_ids, attention_mask, tokentype_ids, position_ids)
        prediction_scores = self.lm_head(sequence_output, self.roberta.word_embeddings_weight())
        if labels is None:
            return {"prediction_scores": dist.gather_from_tensor_parallel_region(prediction_scores)}
        shifted_scores = prediction_scores[:, :-1]
        shifted_labels = to_local(labels)[:, 1:]
        if not self.training:
            return {"lm_loss": self.loss_fc.lm_loss(shifted_scores, shifted_labels)}
        mask = (shifted_labels >= 0) if loss_mask is None else to_local(loss_mask)[:, 1:]
        return self.loss_fc(shifted_scores, shifted_labels, mask)
