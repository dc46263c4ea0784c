"""Rotary position embeddings (RoPE), with the scalings Hugging Face's Llama config names.

    rope = RotaryEmbedding(head_size=128, rope_theta=10000.0, rope_scaling=None)
    query, key = rope(query, key, position_ids)      # [b, heads, s, head_size] each

Pairs are (i, i + head_size / 2), as Hugging Face's `rotate_half` lays them out, so Llama
weights from the Hugging Face hub load without permuting q and k.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
from torch import nn

__all__ = ["RotaryEmbedding", "ROPE_SCALINGS", "apply_rotary", "rope_inverse_frequencies", "rotate_half"]

# rope_scaling "rope_type" (or the older "type") values that are computed here.
ROPE_SCALINGS = ("default", "linear", "llama3")


def _scaling_type(rope_scaling: Optional[Mapping[str, Any]]) -> str:
    if not rope_scaling:
        return "default"
    kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if kind not in ROPE_SCALINGS:
        raise ValueError(
            f"rope_scaling type {kind!r} is not supported: use one of {', '.join(ROPE_SCALINGS)} (or no rope_scaling)"
        )
    return kind


def rope_inverse_frequencies(head_size: int, rope_theta: float, rope_scaling: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
    """The float32 inverse frequencies [head_size / 2] of each rotated pair.

    `rope_scaling` as in a Hugging Face config: None (or rope_type "default");
    `{"rope_type": "linear", "factor": f}` (positions divided by f); `{"rope_type": "llama3",
    "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}`
    (Llama 3.1: long wavelengths divided by `factor`, short ones kept, smooth between).
    """
    kind = _scaling_type(rope_scaling)
    inv_freq = 1.0 / (rope_theta ** (torch.arange(0, head_size, 2, dtype=torch.int64).float() / head_size))
    if kind == "linear":
        return inv_freq / float(rope_scaling["factor"])
    if kind == "llama3":
        factor = float(rope_scaling["factor"])
        low, high = float(rope_scaling["low_freq_factor"]), float(rope_scaling["high_freq_factor"])
        context = float(rope_scaling["original_max_position_embeddings"])
        wavelength = 2 * math.pi / inv_freq
        scaled = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
        smooth = (context / wavelength - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= context / high) & (wavelength <= context / low)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the halves of the last dim."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotate queries and keys by their positions (RoPE); holds no parameters.

    Args:
        head_size: size of each head (even).
        rope_theta: the base of the wavelengths.
        rope_scaling: a Hugging Face `rope_scaling` dict, or None (see
            `rope_inverse_frequencies`; other kinds are a `ValueError` naming the supported ones).
    """

    def __init__(self, head_size: int, rope_theta: float = 10000.0, rope_scaling: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        if head_size % 2:
            raise ValueError(f"rotary embeddings rotate pairs: head_size must be even, got {head_size}")
        self.head_size, self.rope_theta = head_size, rope_theta
        self.rope_scaling = dict(rope_scaling) if rope_scaling else None
        # Not saved: it is a function of the config (checkpoints stay layout- and version-free).
        self.register_buffer("inv_freq", rope_inverse_frequencies(head_size, rope_theta, rope_scaling), persistent=False)

    def cos_sin(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [b, 1, s, head_size] of the angles at `position_ids` [b, s] (computed in float32)."""
        angles = position_ids[:, :, None].float() * self.inv_freq.to(position_ids.device)
        angles = torch.cat((angles, angles), dim=-1)[:, None]
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, query: torch.Tensor, key: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`query` [b, hq, s, d] and `key` [b, hk, s, d] rotated to `position_ids` [b, s]."""
        return apply_rotary(query, key, *self.cos_sin(position_ids, query.dtype))

    def extra_repr(self) -> str:
        return f"head_size={self.head_size}, rope_theta={self.rope_theta}, rope_scaling={self.rope_scaling}"


def apply_rotary(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`query` and `key` [b, heads, s, d] rotated by the angles whose `cos` and `sin`
    [b, 1, s, d] `RotaryEmbedding.cos_sin` gave (a model computes them once for all layers)."""
    cos, sin = cos.to(device=query.device, dtype=query.dtype), sin.to(device=query.device, dtype=query.dtype)
    return query * cos + rotate_half(query) * sin, key * cos + rotate_half(key) * sin
