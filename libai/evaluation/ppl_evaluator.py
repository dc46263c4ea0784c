"""Perplexity of a language model (LiBai's PPLEvaluator)."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Mapping

import torch

from libai.evaluation.evaluator import DatasetEvaluator

__all__ = ["PPLEvaluator"]


class PPLEvaluator(DatasetEvaluator):
    """Perplexity ``exp(mean token loss)`` over the whole dataset: ``{"PPL": ...}``.

    Reads the per-token losses a model returns in eval mode, of shape (batch,) or
    (batch, seq...): the outputs whose key contains "lm_loss" ("lm_loss",
    "masked_lm_loss"), or else every output whose key contains "loss". Where ``inputs`` has a
    ``loss_mask`` of the same shape, only the tokens it marks count. Tokens are summed in
    float64 over all batches before the mean, so the value does not depend on how the
    dataset was batched or split over ranks.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget the sums of the previous evaluation."""
        self._loss_sum = 0.0
        self._num_tokens = 0.0

    def process(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Add one batch's token losses."""
        keys = [k for k in outputs if "lm_loss" in k] or [k for k in outputs if "loss" in k]
        losses = [outputs[k] for k in keys if isinstance(outputs[k], torch.Tensor)]
        if not losses:
            raise KeyError(
                f"PPLEvaluator reads the per-token losses the model returns in eval mode (a key "
                f"containing 'loss'), got outputs {sorted(outputs)}"
            )
        mask = inputs.get("loss_mask")
        for loss in losses:
            loss = loss.detach().double()
            if loss.ndim == 0:
                raise ValueError(
                    "PPLEvaluator needs per-sample or per-token losses (batch first), got a scalar: "
                    "return the unreduced loss from the model's forward in eval mode"
                )
            if mask is not None and mask.shape == loss.shape:
                weight = mask.to(loss.device, torch.float64)
                self._loss_sum += float((loss * weight).sum())
                self._num_tokens += float(weight.sum())
            else:
                self._loss_sum += float(loss.sum())
                self._num_tokens += loss.numel()

    def evaluate(self) -> OrderedDict:
        """``{"PPL": exp(total loss / total tokens)}``."""
        mean = self._loss_sum / max(self._num_tokens, 1.0)
        return OrderedDict(PPL=math.exp(mean))
