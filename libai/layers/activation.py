"""LiBai's activations by name: `build_activation("gelu")` and the `Activation` names."""
from __future__ import annotations

import enum
from typing import Optional, Union

import torch
from torch import nn


class Activation(str, enum.Enum):
    """The activation names LiBai's layers and configs use."""

    SquaredReLU = "squared_relu"
    GeLU = "gelu"
    GeLUTanh = "gelu_tanh"
    LeakyReLU = "leaky_relu"
    ReLU = "relu"
    Tanh = "tanh"
    QuickGELU = "quick_gelu"


class SquaredReLU(nn.Module):
    """`relu(x) ** 2` (Primer's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class QuickGELU(nn.Module):
    """`x * sigmoid(1.702 x)`, the GELU approximation CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


_BUILDERS = {
    Activation.SquaredReLU: SquaredReLU,
    Activation.GeLU: nn.GELU,
    Activation.GeLUTanh: lambda: nn.GELU(approximate="tanh"),
    Activation.LeakyReLU: nn.LeakyReLU,
    Activation.ReLU: nn.ReLU,
    Activation.Tanh: nn.Tanh,
    Activation.QuickGELU: QuickGELU,
}


def build_activation(activation: Optional[Union[Activation, str]]) -> nn.Module:
    """The module of `activation` (an `Activation` or its name); `None` gives `nn.Identity`.

    An unknown name is a `ValueError` listing the known ones.
    """
    if not activation:
        return nn.Identity()
    try:
        key = Activation(activation)
    except ValueError:
        names = ", ".join(a.value for a in Activation)
        raise ValueError(f"unknown activation {activation!r}: use one of {names}") from None
    return _BUILDERS[key]()
