"""flowvision.transforms for LiBai's vision configs: the transforms they use, on PIL images
and tensors, without torchvision.

`ToTensor` turns a PIL image or numpy array into a float tensor ``C x H x W``; the geometric
transforms (`Resize`, `CenterCrop`, `RandomResizedCrop`, `RandomCrop`,
`RandomHorizontalFlip`) take either a PIL image or a tensor shaped ``(..., H, W)`` and return
the same kind; `Normalize` takes a float tensor. Random transforms draw through
`libai.data.vision.rng`: seeded per sample inside `augmentation_rng(index)`, from torch's
global generator elsewhere.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import numpy as np
import torch

from libai.data.vision import rng
from libai.data.vision.transforms import functional
from libai.data.vision.transforms.functional import (
    Interpolation,
    InterpolationMode,
    check_image,
    crop,
    hflip,
    image_size,
    interp_mode,
    pad,
    resize,
)

__all__ = [
    "Compose",
    "ToTensor",
    "Normalize",
    "Resize",
    "CenterCrop",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomHorizontalFlip",
    "InterpolationMode",
    "functional",
]


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """(h, w) from an int or a 1-/2-sequence."""
    if isinstance(size, numbers.Integral):
        pair = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) in (1, 2):
        pair = (int(size[0]), int(size[-1]))
    else:
        raise ValueError(f"{name} size must be an int or (height, width), got {size!r}")
    if min(pair) <= 0:
        raise ValueError(f"{name} size must be positive, got {size!r}")
    return pair


class Compose:
    """Apply transforms one after the other."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> Any:
        for transform in self.transforms:
            img = transform(img)
        return img

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class ToTensor:
    """PIL image or numpy array (HW or HWC) → float tensor CHW; uint8 is scaled to [0, 1].

    Other dtypes keep their values (as torchvision does), converted to float32.
    """

    def __call__(self, img: Any) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            raise TypeError("ToTensor got a tensor already: drop ToTensor from the transforms")
        array = np.asarray(img)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(
                f"ToTensor expects an HxW or HxWxC image, got an array of shape {array.shape}"
            )
        is_uint8 = array.dtype == np.uint8
        # Copy: the source may be a read-only view of a dataset held in memory, which
        # torch.from_numpy would share (and warn about).
        tensor = torch.from_numpy(np.array(array.transpose(2, 0, 1), order="C", copy=True))
        tensor = tensor.to(torch.float32)
        return tensor.div_(255.0) if is_uint8 else tensor

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    """(img - mean) / std per channel of a float tensor shaped (C, H, W) or (B, C, H, W)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        self.mean = torch.as_tensor(list(mean), dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(list(std), dtype=torch.float32).reshape(-1)
        if (self.std == 0).any():
            raise ValueError(f"Normalize std has a zero entry ({list(std)}): it divides by std")
        self.inplace = inplace

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or img.dim() < 2:
            raise TypeError(f"Normalize expects a tensor shaped (..., H, W), got {type(img).__name__}: "
                            f"put ToTensor() first in Compose")
        if not img.is_floating_point():
            raise TypeError(f"Normalize expects a float tensor, got {img.dtype}: use ToTensor() first")
        channels = img.shape[-3] if img.dim() >= 3 else 1
        if self.mean.numel() not in (1, channels) or self.std.numel() not in (1, channels):
            raise ValueError(
                f"Normalize has {self.mean.numel()} means / {self.std.numel()} stds for an image "
                f"with {channels} channels: give one value per channel"
            )
        mean = self.mean.to(img.device, img.dtype).view(-1, 1, 1)
        std = self.std.to(img.device, img.dtype).view(-1, 1, 1)
        if img.dim() == 2:
            mean, std = mean.view(-1, 1), std.view(-1, 1)
        if self.inplace:
            return img.sub_(mean).div_(std)
        return (img - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Resize:
    """Resize a PIL image or a tensor (see `functional.resize` for the filters).

    An int `size` sets the shorter side and keeps the aspect ratio (the longer side is
    ``int(size * long / short)``); (h, w) sets both. `interpolation` is an
    `InterpolationMode` or its name ("bilinear").
    """

    def __init__(self, size: int | Sequence[int], interpolation: Interpolation = InterpolationMode.BILINEAR) -> None:
        self.size = size if isinstance(size, numbers.Integral) else _pair(size, "Resize")
        if isinstance(self.size, numbers.Integral) and self.size <= 0:
            raise ValueError(f"Resize size must be positive, got {size!r}")
        self.interpolation = interp_mode(interpolation)

    def _target(self, h: int, w: int) -> tuple[int, int]:
        if not isinstance(self.size, numbers.Integral):
            return self.size
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.size * long / short)
        return (self.size, new_long) if h <= w else (new_long, self.size)

    def __call__(self, img: Any) -> Any:
        img = check_image(img, "Resize")
        return resize(img, self._target(*image_size(img)), self.interpolation)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation.value!r})"


class CenterCrop:
    """Crop the centre `size`; an image smaller than `size` is zero-padded first (torchvision rule)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size, "CenterCrop")

    def __call__(self, img: Any) -> Any:
        img = check_image(img, "CenterCrop")
        th, tw = self.size
        h, w = image_size(img)
        if h < th or w < tw:
            pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
            img = pad(img, pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2, 0)
            h, w = image_size(img)
        top = int(round((h - th) / 2.0))
        left = int(round((w - tw) / 2.0))
        return crop(img, top, left, th, tw)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class RandomCrop:
    """Pad by `padding` (int, (lr, tb) or (l, t, r, b)) with `fill`, then crop `size` at random."""

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        pad_if_needed: bool = False,
        fill: float = 0,
    ) -> None:
        self.size = _pair(size, "RandomCrop")
        self.padding = self._padding(padding)
        self.pad_if_needed = pad_if_needed
        self.fill = fill

    @staticmethod
    def _padding(padding: int | Sequence[int] | None) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) as torchvision reads it."""
        if padding is None:
            return (0, 0, 0, 0)
        if isinstance(padding, numbers.Integral):
            return (int(padding),) * 4
        padding = [int(p) for p in padding]
        if len(padding) == 2:
            return (padding[0], padding[1], padding[0], padding[1])
        if len(padding) == 4:
            return tuple(padding)  # type: ignore[return-value]
        raise ValueError(f"RandomCrop padding must be an int, 2 or 4 ints, got {padding!r}")

    def __call__(self, img: Any) -> Any:
        img = check_image(img, "RandomCrop")
        img = pad(img, *self.padding, fill=self.fill)
        th, tw = self.size
        h, w = image_size(img)
        if self.pad_if_needed and (h < th or w < tw):
            img = pad(img, 0, 0, max(tw - w, 0), max(th - h, 0), self.fill)
            h, w = image_size(img)
        if h < th or w < tw:
            raise ValueError(
                f"RandomCrop size {self.size} is larger than the (padded) image {(h, w)}: "
                f"use a smaller size, padding, or pad_if_needed=True"
            )
        top = rng.randint(0, h - th + 1)
        left = rng.randint(0, w - tw + 1)
        return crop(img, top, left, th, tw)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomResizedCrop:
    """Crop a random window, then resize it to `size` (torchvision's algorithm).

    The window covers a fraction of the image drawn uniformly from `scale`, with an aspect
    ratio (width / height) drawn log-uniformly from `ratio`; after 10 tries that do not fit,
    it is the largest centred window whose ratio lies in `ratio`.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: Interpolation = InterpolationMode.BILINEAR,
    ) -> None:
        self.size = _pair(size, "RandomResizedCrop")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"RandomResizedCrop scale must be (min, max) with 0 < min <= max, got {tuple(scale)}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"RandomResizedCrop ratio must be (min, max) with 0 < min <= max, got {tuple(ratio)}")
        self.interpolation = interp_mode(interpolation)

    def window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the crop for an image of `height x width`."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, height - h + 1), rng.randint(0, width - w + 1), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Any) -> Any:
        img = check_image(img, "RandomResizedCrop")
        top, left, h, w = self.window(*image_size(img))
        return resize(crop(img, top, left, h, w), self.size, self.interpolation)

    def __repr__(self) -> str:
        return (f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation.value!r})")


class RandomHorizontalFlip:
    """Mirror left to right with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, img: Any) -> Any:
        img = check_image(img, "RandomHorizontalFlip")
        if rng.rand() < self.p:
            return hflip(img)
        return img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"
