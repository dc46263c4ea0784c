"""Top-k classification accuracy (LiBai's ClsEvaluator)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch

from libai.evaluation.evaluator import DatasetEvaluator

__all__ = ["ClsEvaluator", "topk_correct"]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, topk: Sequence[int]) -> list[int]:
    """Number of samples whose label is among the `k` highest scores, for each k in `topk`.

    As in LiBai, k is capped at the number of classes (Acc@5 of a 2-class problem is Acc@2).
    """
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"ClsEvaluator needs prediction_scores of shape (batch, classes) and labels of shape "
            f"(batch,), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    maxk = min(max(topk), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices  # (batch, maxk), best first
    hits = top.eq(labels.reshape(-1, 1).to(top.device))  # at most one True per row
    cumulative = hits.cumsum(dim=1).clamp_(max=1)  # row hit within the first j+1 guesses
    return [int(cumulative[:, min(k, maxk) - 1].sum().item()) for k in topk]


# The output keys that hold class scores [batch, classes]: LiBai's vision models say
# "prediction_scores", its BertForClassification "logits".
CLASS_SCORE_KEYS = ("prediction_scores", "logits")


def class_scores(outputs: Mapping[str, Any]) -> Any:
    """The class scores [batch, classes] of a model's output dict: its "prediction_scores",
    else its "logits"; a `KeyError` naming both when it has neither."""
    for key in CLASS_SCORE_KEYS:
        if key in outputs:
            return outputs[key]
    raise KeyError(
        f"the model's outputs {sorted(outputs)} hold no class scores: return them as "
        f"'prediction_scores' or 'logits' [batch, classes]"
    )


class ClsEvaluator(DatasetEvaluator):
    """Top-k accuracy in percent: ``{"Acc@1": ..., "Acc@5": ...}``.

    Reads ``outputs["prediction_scores"]`` (or ``outputs["logits"]``) (batch, classes) and ``inputs["labels"]`` (batch,).
    """

    def __init__(self, topk: Sequence[int] = (1, 5)) -> None:
        self.topk = tuple(int(k) for k in topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f"ClsEvaluator topk must be positive integers, got {topk}")
        self.reset()

    def reset(self) -> None:
        """Forget the counts of the previous evaluation."""
        self._num_samples = 0
        self._num_correct = [0] * len(self.topk)

    def process(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Count the correct top-k predictions of one batch."""
        if "labels" not in inputs:
            raise KeyError(
                f"ClsEvaluator reads inputs['labels'], got inputs {sorted(inputs)}: rename the dataset field"
            )
        labels = inputs["labels"]
        correct = topk_correct(class_scores(outputs), labels, self.topk)
        self._num_samples += int(labels.shape[0])
        self._num_correct = [a + b for a, b in zip(self._num_correct, correct)]

    def evaluate(self) -> dict:
        """Accuracy in percent for each k (0.0 when nothing was processed)."""
        results: OrderedDict = OrderedDict()
        for k, correct in zip(self.topk, self._num_correct):
            results[f"Acc@{k}"] = 100.0 * correct / self._num_samples if self._num_samples else 0.0
        return results
