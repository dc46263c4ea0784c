"""BERT in LiBai's form, built only from `libai.layers`.

LiBai's BERT is Megatron's: embeddings without a LayerNorm, pre-LN transformer layers and a
final LayerNorm. With `apply_residual_post_layernorm=True` it computes exactly the original
(post-LN) BERT of Hugging Face: each layer's `input_layernorm` plays the LayerNorm that
ends the previous block (the embeddings' LayerNorm for layer 0), the residual is taken
after that norm, and `final_layernorm` is the last block's output LayerNorm. The Hugging
Face loader (`libai.models.utils.model_loader`) maps the weights that way.

Module names follow LiBai (`bert.embeddings.vocab_embeddings`, `bert.encoders.N`,
`bert.final_layernorm`, `bert.pooler.dense`, `cls_head.predictions`, `cls_head.lm_logits`, ...).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from libai.config import configurable
from libai.layers import (
    AttnMaskType,
    Embedding,
    LayerNorm,
    Linear,
    LMLogits,
    ParallelCrossEntropyLoss,
    TransformerLayer,
    VocabEmbedding,
)
from libai.layers.utils import InitMethod, to_local
from libai.utils import distributed as dist

from .utils.config_args import init_kwargs_from_config
from .utils.weight_init import init_method_normal, scaled_init_method_normal


class BertExtendedAttnMask(nn.Module):
    """A [b, s] padding mask (1 = token, 0 = padding) -> a boolean keep-mask [b, 1, 1, s].

    Only the keys are masked (as Hugging Face does): padded query rows still attend to the
    real tokens, so every position's output, padding included, equals Hugging Face's.
    LiBai also masks the padded query rows; real tokens get the same output either way.
    """

    def forward(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Keep-mask [b, 1, 1, s] of `attention_mask` [b, s]."""
        return (to_local(attention_mask) > 0.5)[:, None, None, :]


class BertEmbeddings(nn.Module):
    """Word (vocabulary-parallel) + position (+ token-type) embeddings, then dropout.

    Args:
        vocab_size: vocabulary size (must divide by the tensor-parallel size).
        hidden_size: embedding size.
        max_sequence_length: number of positions.
        embedding_dropout_prob: dropout on the sum.
        num_tokentypes: number of token types (0: no token-type embeddings).
        init_method: initialiser of the tables.
        amp_enabled: accepted for LiBai compatibility.
        padding_idx: the word and position tables' zero, untrained row (None: none; RoBERTa's is 1).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_sequence_length: int,
        embedding_dropout_prob: float,
        num_tokentypes: int = 0,
        init_method: InitMethod = nn.init.xavier_normal_,
        amp_enabled: bool = False,
        padding_idx: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.max_sequence_length = max_sequence_length
        self.vocab_embeddings = VocabEmbedding(
            vocab_size, hidden_size, padding_idx, init_method=init_method, amp_enabled=amp_enabled, layer_idx=0
        )
        self.position_embeddings = Embedding(
            max_sequence_length, hidden_size, padding_idx, init_method=init_method, amp_enabled=amp_enabled, layer_idx=0
        )
        self.tokentype_embeddings = None
        if num_tokentypes > 0:
            self.tokentype_embeddings = Embedding(
                num_tokentypes, hidden_size, init_method=init_method, amp_enabled=amp_enabled, layer_idx=0
            )
        self.embedding_dropout = nn.Dropout(embedding_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor,
        tokentype_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Embeddings [b, s, hidden]; positions default to 0..s-1 and token types to 0."""
        input_ids = to_local(input_ids)
        seq_length = input_ids.shape[-1]
        if seq_length > self.max_sequence_length:
            raise ValueError(
                f"BERT input has {seq_length} tokens but max_position_embeddings is "
                f"{self.max_sequence_length}: shorten the sequence"
            )
        if position_ids is None:
            position_ids = torch.arange(seq_length, device=input_ids.device)
        embeddings = self.vocab_embeddings(input_ids) + self.position_embeddings(to_local(position_ids))
        if self.tokentype_embeddings is not None:
            if tokentype_ids is None:
                tokentype_ids = torch.zeros_like(input_ids)
            embeddings = embeddings + self.tokentype_embeddings(to_local(tokentype_ids))
        return self.embedding_dropout(embeddings)

    def word_embeddings(self) -> torch.Tensor:
        """The word embedding weight, which the LM head ties to."""
        return self.vocab_embeddings.weight


class BertPooler(nn.Module):
    """`tanh(dense(hidden[:, 0]))`: the [CLS] token's summary of the sequence."""

    def __init__(self, hidden_size: int, init_method: InitMethod) -> None:
        super().__init__()
        # Replicated: a hidden x hidden layer run on one token is too small to split.
        self.dense = Linear(hidden_size, hidden_size, bias=True, parallel="data", init_method=init_method, layer_idx=-1)
        self.activation_func = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Pooled output [b, hidden] of `hidden_states` [b, s, hidden]."""
        return self.activation_func(self.dense(hidden_states[:, 0]))


class BertLMPredictionHead(nn.Module):
    """The LM head's transform before the tied output layer: `LayerNorm(gelu(dense(h)))`."""

    def __init__(self, hidden_size: int, init_method: InitMethod, layernorm_eps: float = 1e-12) -> None:
        super().__init__()
        # Replicated, so that the LayerNorm sees the whole hidden vector on every rank.
        self.dense = Linear(hidden_size, hidden_size, bias=True, parallel="data", init_method=init_method, layer_idx=-1)
        self.activation_func = nn.GELU()
        self.layernorm = LayerNorm(hidden_size, eps=layernorm_eps, layer_idx=-1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Transformed hidden states, same shape as the input."""
        return self.layernorm(self.activation_func(self.dense(hidden_states)))


class BertLoss(nn.Module):
    """Masked-LM loss `sum(loss * loss_mask) / sum(loss_mask)` and, with the binary head,
    the sentence-order / next-sentence loss (cross entropy, labels of -1 ignored)."""

    def __init__(self, add_binary_head: bool = True) -> None:
        super().__init__()
        self.add_binary_head = add_binary_head
        self.lm_loss = ParallelCrossEntropyLoss()

    def forward(
        self,
        lm_output: torch.Tensor,
        lm_labels: torch.Tensor,
        loss_mask: Optional[torch.Tensor],
        binary_logits: Optional[torch.Tensor],
        ns_labels: Optional[torch.Tensor],
    ) -> dict:
        """`{"lm_loss": ...[, "sop_loss": ...]}`; a missing `loss_mask` counts every token."""
        lm_loss = self.lm_loss(lm_output, lm_labels)
        mask = torch.ones_like(lm_loss) if loss_mask is None else to_local(loss_mask).to(lm_loss.dtype)
        # clamp: a micro-batch without any masked token gives 0, not 0 / 0.
        losses = {"lm_loss": (lm_loss * mask).sum() / mask.sum().clamp(min=1.0)}
        if self.add_binary_head and ns_labels is not None:
            losses["sop_loss"] = F.cross_entropy(binary_logits.float(), to_local(ns_labels).long(), ignore_index=-1)
        return losses


class BertModel(nn.Module):
    """BERT encoder (LiBai's `BertModel`): `forward(input_ids, attention_mask, tokentype_ids=None)`
    returns `(sequence_output [b, s, hidden], pooled_output [b, hidden] or None)`.

    Args:
        vocab_size, hidden_size, hidden_layers, num_attention_heads, intermediate_size: sizes.
        hidden_dropout_prob: dropout on embeddings and on each block's outputs.
        attention_probs_dropout_prob: dropout on attention probabilities.
        max_position_embeddings: number of positions.
        num_tokentypes: number of token types (0: none).
        add_pooling_layer: build the [CLS] pooler.
        initializer_range: std of the normal initialisation (output projections are scaled
            by 1 / sqrt(2 * hidden_layers), as in LiBai).
        layernorm_eps: LayerNorm eps.
        bias_gelu_fusion, bias_dropout_fusion, scale_mask_softmax_fusion,
            apply_query_key_layer_scaling: LiBai's kernel switches (same results here).
        apply_residual_post_layernorm: residuals after the norms; True gives the original
            post-LN BERT (see the module docstring), False Megatron's pre-LN BERT.
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
        hidden_dropout_prob: float,
        attention_probs_dropout_prob: float,
        max_position_embeddings: int,
        num_tokentypes: int = 2,
        add_pooling_layer: bool = True,
        initializer_range: float = 0.02,
        layernorm_eps: float = 1e-12,
        bias_gelu_fusion: bool = True,
        bias_dropout_fusion: bool = True,
        scale_mask_softmax_fusion: bool = True,
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
            hidden_dropout_prob=hidden_dropout_prob,
            attention_probs_dropout_prob=attention_probs_dropout_prob,
            max_position_embeddings=max_position_embeddings,
            num_tokentypes=num_tokentypes,
            add_pooling_layer=add_pooling_layer,
            initializer_range=initializer_range,
            layernorm_eps=layernorm_eps,
            apply_residual_post_layernorm=apply_residual_post_layernorm,
        )
        init_method = init_method_normal(initializer_range)
        scaled_init_method = scaled_init_method_normal(initializer_range, hidden_layers)
        self.embeddings = BertEmbeddings(
            vocab_size,
            hidden_size,
            max_position_embeddings,
            hidden_dropout_prob,
            num_tokentypes,
            init_method,
            amp_enabled,
        )
        self.extended_attn_mask = BertExtendedAttnMask()
        self.encoders = nn.ModuleList(
            [
                TransformerLayer(
                    hidden_size,
                    intermediate_size,
                    num_attention_heads,
                    attention_dropout_prob=attention_probs_dropout_prob,
                    output_dropout_prob=hidden_dropout_prob,
                    layernorm_epsilon=layernorm_eps,
                    init_method=init_method,
                    output_layer_init_method=scaled_init_method,
                    bias_gelu_fusion=bias_gelu_fusion,
                    bias_dropout_fusion=bias_dropout_fusion,
                    scale_mask_softmax_fusion=scale_mask_softmax_fusion,
                    apply_query_key_layer_scaling=apply_query_key_layer_scaling,
                    apply_residual_post_layernorm=apply_residual_post_layernorm,
                    attn_mask_type=AttnMaskType.padding,
                    layer_idx=i,
                )
                for i in range(hidden_layers)
            ]
        )
        self.final_layernorm = LayerNorm(hidden_size, eps=layernorm_eps, layer_idx=-1)
        self.pooler = BertPooler(hidden_size, init_method) if add_pooling_layer else None

    @classmethod
    def from_config(cls, cfg) -> dict:
        """`__init__` arguments read from a LiBai BERT config (configs/common/models/bert.py)."""
        return init_kwargs_from_config(cls.__init__, cfg, "BertModel")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        tokentype_ids: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """`(sequence_output, pooled_output)`; `attention_mask` [b, s] holds 1 for tokens, 0 for padding."""
        mask = None if attention_mask is None else self.extended_attn_mask(attention_mask)
        hidden_states = self.embeddings(input_ids, tokentype_ids)
        for layer in self.encoders:
            hidden_states = layer(hidden_states, mask)
        encoder_output = self.final_layernorm(hidden_states)
        pooled_output = self.pooler(encoder_output) if self.pooler is not None else None
        return encoder_output, pooled_output

    def word_embeddings_weight(self) -> torch.Tensor:
        """The word embedding weight, which the LM head ties to."""
        return self.embeddings.word_embeddings()


class BertPreTrainingHeads(nn.Module):
    """The masked-LM head (transform + tied output layer with bias) and the binary
    (sentence order) head, with the pre-training loss as `loss_func`."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        init_method: InitMethod,
        add_binary_head: bool = True,
        layernorm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(hidden_size, init_method, layernorm_eps)
        self.seq_relationship = Linear(
            hidden_size, 2, bias=True, parallel="data", init_method=init_method, layer_idx=-1
        )
        self.lm_logits = LMLogits(vocab_size, bias=True)
        self.loss_func = BertLoss(add_binary_head)

    def forward(
        self,
        sequence_output: torch.Tensor,
        pooled_output: Optional[torch.Tensor],
        word_embeddings_weight: torch.Tensor,
        ns_labels: Optional[torch.Tensor],
        lm_labels: Optional[torch.Tensor],
        loss_mask: Optional[torch.Tensor],
    ) -> dict:
        """Losses in training with `lm_labels`; in evaluation with `lm_labels` the per-token
        masked-LM losses (for PPLEvaluator, without gathering the vocabulary); otherwise the
        scores (full vocabulary)."""
        prediction_scores = self.lm_logits(self.predictions(sequence_output), word_embeddings_weight)
        seq_relationship_score = None if pooled_output is None else self.seq_relationship(pooled_output)
        if lm_labels is not None and self.training:
            return self.loss_func(prediction_scores, to_local(lm_labels), loss_mask, seq_relationship_score, ns_labels)
        if lm_labels is not None:
            outputs = {"lm_loss": self.loss_func.lm_loss(prediction_scores, to_local(lm_labels))}
        else:
            outputs = {"prediction_scores": dist.gather_from_tensor_parallel_region(prediction_scores)}
        if seq_relationship_score is not None:
            outputs["seq_relationship_score"] = seq_relationship_score
        return outputs


class BertForPreTraining(nn.Module):
    """BERT with the masked-LM and sentence-order heads (LiBai's `BertForPreTraining(cfg)`).

    `cfg.add_binary_head` (default True) adds the sentence-order loss. `forward(input_ids,
    attention_mask, tokentype_ids=None, ns_labels=None, lm_labels=None, loss_mask=None)`
    returns `{"lm_loss", "sop_loss"}` in training and `{"prediction_scores",
    "seq_relationship_score"}` (plus the losses when labels are given) in eval.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        if cfg.get("add_binary_head", True) and not cfg.get("add_pooling_layer", True):
            raise ValueError(
                "BertForPreTraining's binary head reads the pooled output: set cfg.add_pooling_layer=True "
                "or cfg.add_binary_head=False"
            )
        self.bert = BertModel(cfg)
        self.cls_head = BertPreTrainingHeads(
            cfg["vocab_size"],
            cfg["hidden_size"],
            init_method_normal(cfg.get("initializer_range", 0.02)),
            cfg.get("add_binary_head", True),
            cfg.get("layernorm_eps", 1e-12),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        tokentype_ids: Optional[torch.Tensor] = None,
        ns_labels: Optional[torch.Tensor] = None,
        lm_labels: Optional[torch.Tensor] = None,
        loss_mask: Optional[torch.Tensor] = None,
    ) -> dict:
        """See the class docstring."""
        sequence_output, pooled_output = self.bert(input_ids, attention_mask, tokentype_ids)
        return self.cls_head(
            sequence_output,
            pooled_output,
            self.bert.word_embeddings_weight(),
            ns_labels,
            lm_labels,
            loss_mask,
        )


class BertForClassification(nn.Module):
    """BERT with a classifier on the pooled [CLS] output (LiBai's `BertForClassification(cfg)`).

    Reads `cfg.num_labels` and `cfg.classifier_dropout` (default: hidden_dropout_prob).
    `forward(input_ids, attention_mask, tokentype_ids=None, labels=None)` returns LiBai's
    keys: `{"cls_loss"}` in training with labels and `{"logits": [b, num_labels]}` otherwise
    (`ClsEvaluator` and the classification pipelines read `logits` as the class scores).
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        if not cfg.get("add_pooling_layer", True):
            raise ValueError("BertForClassification classifies the pooled output: set cfg.add_pooling_layer=True")
        self.num_labels = cfg.get("num_labels", 2)
        self.bert = BertModel(cfg)
        dropout = cfg.get("classifier_dropout", None)
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"] if dropout is None else dropout)
        self.classifier = Linear(
            cfg["hidden_size"],
            self.num_labels,
            bias=True,
            parallel="data",
            init_method=init_method_normal(cfg.get("initializer_range", 0.02)),
            layer_idx=-1,
        )
        self.loss_func = nn.CrossEntropyLoss()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        tokentype_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> dict:
        """See the class docstring."""
        _, pooled_output = self.bert(input_ids, attention_mask, tokentype_ids)
        logits = self.classifier(self.dropout(pooled_output))
        if labels is not None and self.training:
            loss = self.loss_func(logits.float().view(-1, self.num_labels), to_local(labels).long().view(-1))
            return {"cls_loss": loss}
        return {"logits": logits}
