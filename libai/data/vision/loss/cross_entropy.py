"""Cross entropy against soft targets (the class probabilities that Mixup produces)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SoftTargetCrossEntropy", "LabelSmoothingCrossEntropy"]


class SoftTargetCrossEntropy(nn.Module):
    """Mean over the batch of ``-sum_c target[c] * log_softmax(x)[c]``.

    `x` holds logits ``(..., C)``; `target` holds class probabilities of the same shape.
    A target of class indices (what a loader gives without Mixup) is read as one-hot.
    """

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not target.is_floating_point():
            target = F.one_hot(target.long(), x.shape[-1]).to(x.dtype)
        if target.shape != x.shape:
            raise ValueError(
                f"SoftTargetCrossEntropy got logits {tuple(x.shape)} and targets {tuple(target.shape)}: "
                f"targets must be class probabilities of the logits' shape (use Mixup with num_classes={x.shape[-1]})"
            )
        return torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1).mean()


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross entropy with class indices as targets, smoothed: ``(1 - smoothing) * NLL + smoothing * mean(-log p)``."""

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"LabelSmoothingCrossEntropy smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logprobs = F.log_softmax(x, dim=-1)
        nll = -logprobs.gather(dim=-1, index=target.long().unsqueeze(-1)).squeeze(-1)
        smooth = -logprobs.mean(dim=-1)
        return ((1.0 - self.smoothing) * nll + self.smoothing * smooth).mean()
