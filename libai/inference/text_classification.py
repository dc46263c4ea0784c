"""`TextClassificationPipeline`: text in, label and score out (BERT classification)."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from .basic import PipelineError, reject_unknown
from .classification import ClassificationPipeline

Text = Union[str, tuple[str, str]]


class TextClassificationPipeline(ClassificationPipeline):
    """`pipe(text or (text, pair) or a list of them)` -> `{"label", "score"}` per input.

    Texts are tokenized as in training ([CLS] text [SEP], truncated to `max_seq_length`
    keeping the final [SEP]) and fed as `input_ids`, `attention_mask`, `tokentype_ids` (the
    argument names of `BertForClassification`). The model's `logits` go through
    a softmax.

    Parameters (constructor defaults, or per call): `max_seq_length` (default: the config's
    `model.cfg.max_position_embeddings`, else 512), `labels` (names of the classes, index
    order; default: the class index), `return_all_scores` (add `"scores"`: every label's
    probability).
    """

    def _parse_parameters(
        self,
        max_seq_length: Optional[int] = None,
        labels: Optional[Sequence[str]] = None,
        return_all_scores: bool = False,
        **unknown: Any,
    ) -> tuple[dict, dict, dict]:
        reject_unknown(type(self).__name__, unknown)
        return {"max_seq_length": max_seq_length}, {}, {"labels": labels, "return_all_scores": return_all_scores}

    def preprocess(self, inputs: Union[Text, list[Text]], max_seq_length: Optional[int] = None) -> dict:
        """BERT inputs [n, longest] for one text (or pair) or a list of them."""
        if self.tokenizer is None:
            raise PipelineError("TextClassificationPipeline needs cfg.tokenization.tokenizer in the config")
        single = isinstance(inputs, (str, tuple))
        texts = [inputs] if single else list(inputs)
        if not texts:
            raise PipelineError("give a text, a (text, pair) tuple, or a non-empty list of them")
        limit = max_seq_length or self.cfg.model.get("cfg", {}).get("max_position_embeddings", 512)
        sep, pad = self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        encoded = []
        for text in texts:
            first, second = (text, None) if isinstance(text, str) else text
            ids = self.tokenizer.encode(first, second)[: limit - 1]
            if ids[-1] != sep:
                ids.append(sep)  # keep [SEP] after truncation, as the training data does
            encoded.append(ids)
        longest = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), longest), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)], mask[row, : len(ids)] = torch.tensor(ids), 1
        return {
            "inputs": {"input_ids": input_ids, "attention_mask": mask, "tokentype_ids": torch.zeros_like(input_ids)},
            "single": single,
        }
