"""LiBai's weight initialisers (Megatron / GPT-2 style), as `init_method` callables of libai.layers.

Each returns a function that fills a full-size tensor in place from the global RNG, which is
what `libai.layers` expect: the layer draws the whole tensor and keeps its shard, so the
initial weights do not depend on the parallel layout.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

InitMethod = Callable[[torch.Tensor], object]


def init_method_normal(sigma: float, mean: float = 0.0) -> InitMethod:
    """`normal(mean, sigma)` initialiser (LiBai / Megatron `init_method_normal`)."""

    def init_(tensor: torch.Tensor) -> torch.Tensor:
        return nn.init.normal_(tensor, mean=mean, std=sigma)

    return init_


def scaled_init_method_normal(sigma: float, num_layers: int, mean: float = 0.0) -> InitMethod:
    """`normal(mean, sigma / sqrt(2 * num_layers))` for the projections that write into the
    residual stream (attention and MLP outputs), so its variance does not grow with depth."""
    return init_method_normal(sigma / math.sqrt(2.0 * num_layers), mean)


def init_method_trunc_normal(std: float = 0.02) -> InitMethod:
    """`normal(0, std)` truncated to [-2, 2], as LiBai's and timm's ViT initialise (with a
    small `std` the bounds only guard against outliers)."""

    def init_(tensor: torch.Tensor) -> torch.Tensor:
        return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0, b=2.0)

    return init_
