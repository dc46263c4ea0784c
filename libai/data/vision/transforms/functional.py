"""Functional image operations on PIL images and tensors, and flowvision's interpolation names.

Tensors are images shaped ``(..., H, W)``; PIL images keep their mode. Each function works on
both kinds, the way torchvision's functional API does.
"""
from __future__ import annotations

import numbers
from enum import Enum
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "InterpolationMode",
    "str_to_interp_mode",
    "interp_mode",
    "pil_resample",
    "image_size",
    "crop",
    "resize",
    "hflip",
    "pad",
    "check_image",
    "pil_fill",
]


class InterpolationMode(Enum):
    """Interpolation methods, with torchvision's and flowvision's names and values."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_PIL_FILTERS = {
    InterpolationMode.NEAREST: Image.Resampling.NEAREST,
    InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
    InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
    InterpolationMode.BOX: Image.Resampling.BOX,
    InterpolationMode.HAMMING: Image.Resampling.HAMMING,
    InterpolationMode.LANCZOS: Image.Resampling.LANCZOS,
}
# F.interpolate has no box/hamming/lanczos filters.
_TENSOR_MODES = (InterpolationMode.NEAREST, InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)

Interpolation = Union[InterpolationMode, str]


def str_to_interp_mode(mode_str: str) -> InterpolationMode:
    """The `InterpolationMode` named `mode_str` ("bicubic" -> `InterpolationMode.BICUBIC`)."""
    return interp_mode(mode_str)


def interp_mode(mode: Interpolation) -> InterpolationMode:
    """An `InterpolationMode` from itself, its value ("bicubic") or its name ("BICUBIC",
    which is how a saved config writes it)."""
    if isinstance(mode, InterpolationMode):
        return mode
    if isinstance(mode, str):
        for member in InterpolationMode:
            if mode.lower() == member.value:
                return member
    names = ", ".join(repr(m.value) for m in InterpolationMode)
    raise ValueError(f"unknown interpolation {mode!r}: use an InterpolationMode or one of {names}")


def pil_resample(mode: Interpolation) -> Image.Resampling:
    """PIL's resampling filter for `mode`."""
    return _PIL_FILTERS[interp_mode(mode)]


def _is_pil(img: Any) -> bool:
    return isinstance(img, Image.Image)


def check_image(img: Any, name: str) -> Any:
    """`img` if it is a PIL image or a tensor shaped (..., H, W); else a TypeError."""
    if _is_pil(img) or (isinstance(img, torch.Tensor) and img.dim() >= 2):
        return img
    shape = f" with shape {tuple(img.shape)}" if isinstance(img, torch.Tensor) else ""
    raise TypeError(
        f"{name} expects a PIL image or a tensor shaped (..., H, W); got {type(img).__name__}{shape}: "
        f"open images with PIL, or put ToTensor() first in Compose"
    )


def image_size(img: Any) -> tuple[int, int]:
    """(height, width) of a PIL image or a tensor."""
    if _is_pil(img):
        width, height = img.size
        return height, width
    return int(img.shape[-2]), int(img.shape[-1])


def pad(img: Any, left: int, top: int, right: int, bottom: int, fill: float = 0) -> Any:
    """Pad each side with the constant `fill`."""
    if left == top == right == bottom == 0:
        return img
    if _is_pil(img):
        width, height = img.size
        canvas = Image.new(img.mode, (width + left + right, height + top + bottom), pil_fill(img, fill))
        canvas.paste(img, (left, top))
        return canvas
    return F.pad(img, (left, right, top, bottom), mode="constant", value=fill)


def pil_fill(img: Image.Image, fill: Any) -> Any:
    """`fill` in the shape PIL wants for `img`'s mode (one value per band)."""
    bands = len(img.getbands())
    if isinstance(fill, numbers.Number):
        return int(fill) if bands == 1 else (int(fill),) * bands
    fill = tuple(int(v) for v in fill)
    return fill[0] if bands == 1 else fill


def crop(img: Any, top: int, left: int, height: int, width: int) -> Any:
    """The `height x width` window whose top-left corner is (top, left); must lie inside."""
    if _is_pil(img):
        return img.crop((left, top, left + width, top + height))
    return img[..., top : top + height, left : left + width]


def hflip(img: Any) -> Any:
    """Mirror left to right."""
    if _is_pil(img):
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img.flip(-1)


def resize(img: Any, size: Sequence[int], interpolation: Interpolation = InterpolationMode.BILINEAR) -> Any:
    """Resize to `size` = (height, width).

    PIL images use PIL's filters (which antialias when shrinking, as torchvision on PIL).
    Tensors use `F.interpolate` (nearest, bilinear or bicubic; align_corners=False, no
    antialiasing); integer tensors are interpolated in float and rounded back to their dtype.
    """
    mode = interp_mode(interpolation)
    height, width = int(size[0]), int(size[1])
    if _is_pil(img):
        if img.size == (width, height):
            return img
        return img.resize((width, height), resample=_PIL_FILTERS[mode])
    if mode not in _TENSOR_MODES:
        raise ValueError(
            f"resizing a tensor supports nearest, bilinear and bicubic, not {mode.value!r}: "
            f"resize the PIL image before ToTensor()"
        )
    if tuple(img.shape[-2:]) == (height, width):
        return img
    lead = img.shape[:-2]
    # interpolate wants (N, C, H, W): fold every leading dim into the batch.
    flat = img.reshape(-1, 1, *img.shape[-2:]).to(torch.float32)
    kwargs = {} if mode is InterpolationMode.NEAREST else {"align_corners": False}
    out = F.interpolate(flat, size=(height, width), mode=mode.value, **kwargs)
    out = out.reshape(*lead, height, width)
    if img.is_floating_point():
        return out.to(img.dtype)
    info = torch.iinfo(img.dtype)
    return out.round_().clamp_(info.min, info.max).to(img.dtype)
