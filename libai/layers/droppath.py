"""Stochastic depth (drop path), as LiBai's and timm's vision models use it."""
from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero each sample's `x` (a residual branch) with probability `drop_prob` in training,
    scaling the kept ones by 1 / (1 - drop_prob); `x` itself otherwise."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    keep = torch.rand(shape, dtype=x.dtype, device=x.device) < keep_prob
    return x * keep / keep_prob


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability `drop_prob`."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`drop_path(x, drop_prob, self.training)`."""
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
