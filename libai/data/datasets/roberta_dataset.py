"""RoBERTa pretraining samples: `<s> text </s>` with masked-LM targets only (no sentence pairs)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from libai.data.datasets.bert_dataset import BertDataset
from libai.data.errors import DataError
from libai.data.structures import Instance

__all__ = ["RobertaDataset"]


class RobertaDataset(BertDataset):
    """RoBERTa samples from an indexed dataset (LiBai's `RobertaDataset`): consecutive
    segments of one document, up to `max_seq_length - 2` tokens, as `<s> text </s>`, padded
    with the tokenizer's pad token (RoBERTa's `<pad>`, id 1) to `max_seq_length`.

    `mask_lm_prob` of the text tokens are predicted, as in BERT (80% `<mask>`, 10% a random
    token, 10% unchanged). Fields: `input_ids`, `attention_mask` (1 real / 0 padding),
    `tokentype_ids` (zeros) and on the last stage `lm_labels` (the original ids) and
    `loss_mask` (1.0 where a token is predicted): `RobertaForPreTraining`'s arguments.
    A sample depends only on `(seed, idx)`; `max_num_samples` beyond one epoch repeats the
    epoch's samples with fresh masks.

    Args:
        name: the dataset's name in messages.
        tokenizer: needs cls, sep, mask and pad tokens (`RobertaTokenizer`).
        indexed_dataset: the tokenized documents (or None: opened at `data_prefix`).
        data_prefix: path prefix of the indexed `.bin/.idx` files.
        max_num_samples: the dataset's length (default: one epoch).
        mask_lm_prob: fraction of the tokens to predict.
        max_seq_length: sample length, special tokens included.
        short_seq_prob: probability of a shorter sample (a random target length).
        seed: seed of the samples' packing and masking.
        masking_style: "bert" (the only style, as LiBai's default).
    """

    def __init__(
        self,
        name: str = "roberta",
        tokenizer: Any = None,
        indexed_dataset: Any = None,
        data_prefix: Optional[str] = None,
        max_num_samples: Optional[int] = None,
        mask_lm_prob: float = 0.15,
        max_seq_length: int = 512,
        short_seq_prob: float = 0.0,
        seed: int = 1234,
        masking_style: str = "bert",
    ) -> None:
        if masking_style != "bert":
            raise DataError(f"dataset '{name}': masking_style {masking_style!r} is not supported: use 'bert'")
        self.masking_style = masking_style
        super().__init__(
            name=name,
            tokenizer=tokenizer,
            data_prefix=data_prefix,
            indexed_dataset=indexed_dataset,
            max_num_samples=max_num_samples,
            max_seq_length=max_seq_length,
            mask_lm_prob=mask_lm_prob,
            short_seq_prob=short_seq_prob,
            binary_head=False,
            seed=seed,
        )

    def _padded_instance(
        self, tokens: np.ndarray, masked: np.ndarray, tokentypes: np.ndarray, positions: np.ndarray, ns_label: int
    ) -> Instance:
        # BERT's sample without the sentence-order label, which RoBERTa does not train.
        instance = super()._padded_instance(tokens, masked, tokentypes, positions, ns_label)
        instance.remove("ns_labels")
        return instance
