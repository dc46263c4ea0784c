"""Small image transforms on tensors, so that no torchvision/flowvision is needed.

Images are tensors shaped ``(..., H, W)`` (usually ``C x H x W``); `ToTensor` makes them from
PIL images or numpy arrays. Random transforms draw from torch's global generator, which the
trainer seeds and DataLoader workers re-seed per worker.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Compose",
    "ToTensor",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "CenterCrop",
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


def _check_image(img: Any, name: str) -> torch.Tensor:
    if not isinstance(img, torch.Tensor) or img.dim() < 2:
        raise TypeError(
            f"{name} expects a tensor shaped (..., H, W); got {type(img).__name__}"
            f"{'' if not isinstance(img, torch.Tensor) else ' with shape ' + str(tuple(img.shape))}: "
            f"put ToTensor() first in Compose"
        )
    return img


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
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if (self.std == 0).any():
            raise ValueError(f"Normalize std has a zero entry ({list(std)}): it divides by std")
        self.inplace = inplace

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = _check_image(img, "Normalize")
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


def _pad_to(img: torch.Tensor, top: int, bottom: int, left: int, right: int, fill: float) -> torch.Tensor:
    """Constant-pad the last two dims."""
    if top == bottom == left == right == 0:
        return img
    return F.pad(img, (left, right, top, bottom), mode="constant", value=fill)


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

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = _check_image(img, "RandomCrop")
        left, top, right, bottom = self.padding
        img = _pad_to(img, top, bottom, left, right, self.fill)
        th, tw = self.size
        h, w = img.shape[-2:]
        if self.pad_if_needed and (h < th or w < tw):
            img = _pad_to(img, 0, max(th - h, 0), 0, max(tw - w, 0), self.fill)
            h, w = img.shape[-2:]
        if h < th or w < tw:
            raise ValueError(
                f"RandomCrop size {self.size} is larger than the (padded) image {(h, w)}: "
                f"use a smaller size, padding, or pad_if_needed=True"
            )
        i = int(torch.randint(0, h - th + 1, (1,)))
        j = int(torch.randint(0, w - tw + 1, (1,)))
        return img[..., i : i + th, j : j + tw]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Flip the last dim with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = _check_image(img, "RandomHorizontalFlip")
        if float(torch.rand(1)) < self.p:
            return img.flip(-1)
        return img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Resize:
    """Resize with bilinear interpolation (no antialiasing, align_corners=False).

    An int `size` sets the shorter side and keeps the aspect ratio; (h, w) sets both.
    Integer tensors are interpolated in float and rounded back to their dtype.
    """

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear") -> None:
        if interpolation not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(
                f"Resize interpolation {interpolation!r} is not supported: use 'bilinear', "
                f"'nearest' or 'bicubic'"
            )
        self.size = size if isinstance(size, numbers.Integral) else _pair(size, "Resize")
        if isinstance(self.size, numbers.Integral) and self.size <= 0:
            raise ValueError(f"Resize size must be positive, got {size!r}")
        self.interpolation = interpolation

    def _target(self, h: int, w: int) -> tuple[int, int]:
        if not isinstance(self.size, numbers.Integral):
            return self.size
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.size * long / short)
        return (self.size, new_long) if h <= w else (new_long, self.size)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = _check_image(img, "Resize")
        target = self._target(*img.shape[-2:])
        if tuple(img.shape[-2:]) == target:
            return img
        lead = img.shape[:-2]
        # interpolate wants (N, C, H, W): fold every leading dim into the batch.
        flat = img.reshape(-1, 1, *img.shape[-2:]).to(torch.float32)
        kwargs = {} if self.interpolation == "nearest" else {"align_corners": False}
        out = F.interpolate(flat, size=target, mode=self.interpolation, **kwargs)
        out = out.reshape(*lead, *target)
        if img.is_floating_point():
            return out.to(img.dtype)
        info = torch.iinfo(img.dtype)
        return out.round_().clamp_(info.min, info.max).to(img.dtype)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation!r})"


class CenterCrop:
    """Crop the centre `size`; an image smaller than `size` is zero-padded first (torchvision rule)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size, "CenterCrop")

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = _check_image(img, "CenterCrop")
        th, tw = self.size
        h, w = img.shape[-2:]
        if h < th or w < tw:
            pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
            img = _pad_to(img, pad_h // 2, (pad_h + 1) // 2, pad_w // 2, (pad_w + 1) // 2, 0)
            h, w = img.shape[-2:]
        top = int(round((h - th) / 2.0))
        left = int(round((w - tw) / 2.0))
        return img[..., top : top + th, left : left + tw]

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"
