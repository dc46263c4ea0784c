"""Layer normalisation with parameters replicated over tensor-parallel ranks."""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import Replicate

from .utils import InitMethod, full_init, make_parameter, to_local, tp_mesh

Shape = Union[int, Sequence[int]]


def _as_shape(normalized_shape: Shape) -> tuple[int, ...]:
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


class LayerNorm(nn.Module):
    """`torch.nn.LayerNorm` whose weight (ones) and bias (zeros) are replicated DTensors.

    Args:
        normalized_shape: trailing shape to normalise over.
        eps: added to the variance.
        elementwise_affine: learn a per-element weight (and bias).
        bias: learn a bias too (only with `elementwise_affine`).
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        normalized_shape: Shape,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.layer_idx = layer_idx
        self.weight = self.bias = None
        if elementwise_affine:
            mesh = tp_mesh(layer_idx)
            self.weight = make_parameter(full_init(self.normalized_shape, None, fill=1.0), mesh, Replicate())
            if bias:
                self.bias = make_parameter(full_init(self.normalized_shape, None), mesh, Replicate())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the trailing `normalized_shape` dims of `x`."""
        return F.layer_norm(to_local(x), self.normalized_shape, to_local(self.weight), to_local(self.bias), self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class RMSLayerNorm(nn.Module):
    """Root-mean-square layer norm (T5): `x / sqrt(mean(x^2) + eps) * weight`, no centring.

    Computed in float32 and cast back to the input dtype, as LiBai's T5 does.

    Args:
        normalized_shape: trailing shape to normalise over.
        eps: added to the mean square.
        init_method: initialiser of the weight (ones by default).
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        normalized_shape: Shape,
        eps: float = 1e-6,
        init_method: InitMethod = nn.init.ones_,
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.layer_idx = layer_idx
        self.weight = make_parameter(full_init(self.normalized_shape, init_method), tp_mesh(layer_idx), Replicate())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the trailing `normalized_shape` dims of `x`."""
        x = to_local(x)
        # torch's fused kernel, on float32: x / sqrt(mean(x^2) + eps).
        normed = F.rms_norm(x.float(), self.normalized_shape, eps=self.eps)
        return (to_local(self.weight) * normed.to(x.dtype)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"
