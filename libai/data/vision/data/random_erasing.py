"""Random erasing (Zhong et al. 2017) on normalized image tensors, with timm/flowvision's arguments."""
from __future__ import annotations

import math
from typing import Optional

import torch

from libai.data.vision import rng
from libai.utils.logger import log_ignored_arguments

__all__ = ["RandomErasing"]

_MODES = ("const", "rand", "pixel")


class RandomErasing:
    """With probability `probability`, replace 1..`max_count` random rectangles of an image.

    Applied after `Normalize` to a tensor ``C x H x W`` (or ``B x C x H x W``: each image on
    its own, the first ``B // num_splits`` left clean when ``num_splits > 1``). Each rectangle
    covers a fraction of the image in [`min_area`, `max_area`] (divided among the rectangles)
    with an aspect ratio drawn log-uniformly from [`min_aspect`, `max_aspect`]
    (`max_aspect` defaults to 1 / `min_aspect`); up to 10 tries per rectangle find one that fits.

    `mode`: "const" fills with 0 (the mean after normalization), "rand" with one normal
    colour per channel, "pixel" with normal noise per pixel. The noise is drawn on the CPU
    (so a seeded sample is reproducible) and placed on the image's device; `device` is
    accepted for LiBai compatibility. The input is not modified.
    """

    def __init__(
        self,
        probability: float = 0.5,
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
        max_aspect: Optional[float] = None,
        mode: str = "const",
        min_count: int = 1,
        max_count: Optional[int] = None,
        num_splits: int = 0,
        device: str = "cpu",
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"RandomErasing probability must be in [0, 1], got {probability}")
        mode = (mode or "const").lower()
        if mode not in _MODES:
            raise ValueError(f"RandomErasing mode {mode!r} is unknown: use one of {_MODES}")
        if not 0 < min_area <= max_area:
            raise ValueError(f"RandomErasing needs 0 < min_area <= max_area, got {min_area}, {max_area}")
        max_aspect = max_aspect or 1 / min_aspect
        if not 0 < min_aspect <= max_aspect:
            raise ValueError(f"RandomErasing needs 0 < min_aspect <= max_aspect, got {min_aspect}, {max_aspect}")
        self.probability = float(probability)
        self.min_area, self.max_area = float(min_area), float(max_area)
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
        self.mode = mode
        self.min_count = int(min_count)
        self.max_count = int(max_count or min_count)
        if not 1 <= self.min_count <= self.max_count:
            raise ValueError(f"RandomErasing needs 1 <= min_count <= max_count, got {min_count}, {max_count}")
        self.num_splits = int(num_splits)
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"RandomErasing device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda":
            log_ignored_arguments("RandomErasing", "noise is placed on the image's own device", device=device)

    def _fill(self, channels: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        if self.mode == "pixel":
            values = rng.normal((channels, height, width))
        elif self.mode == "rand":
            values = rng.normal((channels, 1, 1))
        else:
            values = torch.zeros((channels, 1, 1))
        return values.to(device=like.device, dtype=like.dtype)

    def _erase(self, img: torch.Tensor) -> None:
        """Erase rectangles of one image ``C x H x W`` in place."""
        if rng.rand() > self.probability:
            return
        channels, height, width = img.shape
        area = height * width
        count = self.min_count if self.min_count == self.max_count else rng.randint(self.min_count, self.max_count + 1)
        for _ in range(count):
            for _attempt in range(10):
                target_area = rng.uniform(self.min_area, self.max_area) * area / count
                aspect = math.exp(rng.uniform(*self.log_aspect_ratio))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if w < width and h < height:
                    top = rng.randint(0, height - h + 1)
                    left = rng.randint(0, width - w + 1)
                    img[:, top : top + h, left : left + w] = self._fill(channels, h, w, img)
                    break

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or img.dim() not in (3, 4):
            raise TypeError(
                f"RandomErasing expects a tensor C x H x W or B x C x H x W, got {type(img).__name__}: "
                f"put it after ToTensor() and Normalize()"
            )
        img = img.clone()
        if img.dim() == 3:
            self._erase(img)
            return img
        first = img.shape[0] // self.num_splits if self.num_splits > 1 else 0
        for i in range(first, img.shape[0]):
            self._erase(img[i])
        return img

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.probability}, mode={self.mode!r}, count=({self.min_count}, {self.max_count}))"
