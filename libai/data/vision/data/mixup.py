"""Mixup and CutMix on a batch, with timm/flowvision's arguments (mode "batch").

`Mixup(images, labels)` returns the mixed images and soft targets: each image ``i`` is mixed
with image ``B - 1 - i`` of the same batch (the batch reversed) with one weight ``lam`` per
batch, and its target is ``lam * onehot(label_i) + (1 - lam) * onehot(label_{B-1-i})``,
label-smoothed; every target row sums to one.

Reproducibility: the train loader built by `build_image_train_loader` calls
`seed_next_batch(seed, position)` before it hands out each batch, where ``position`` is the
stream position of the batch's first sample (independent of the number of workers). The next
call then draws ``lam``, the choice of CutMix and the box from a generator seeded from
(seed, position). Without a pending seed (Mixup called on its own), it draws from the current
`libai.data.vision.rng` generator: torch's global one outside an `augmentation_rng` block.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence

import torch

from libai.data.vision import rng

__all__ = ["Mixup", "one_hot", "mixup_target", "rand_bbox", "rand_bbox_minmax", "cutmix_bbox_and_lam"]


def one_hot(labels: torch.Tensor, num_classes: int, on_value: float = 1.0, off_value: float = 0.0) -> torch.Tensor:
    """Float rows with `on_value` at each label and `off_value` elsewhere."""
    out = torch.full((labels.shape[0], num_classes), off_value, dtype=torch.float32, device=labels.device)
    return out.scatter_(1, labels.long().view(-1, 1), on_value)


def mixup_target(labels: torch.Tensor, num_classes: int, lam: float = 1.0, smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets: ``lam * smooth(onehot(y)) + (1 - lam) * smooth(onehot(reversed y))``."""
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    first = one_hot(labels, num_classes, on_value, off_value)
    second = one_hot(labels.flip(0), num_classes, on_value, off_value)
    return first * lam + second * (1.0 - lam)


def rand_bbox(img_shape: Sequence[int], lam: float, margin: float = 0.0) -> tuple[int, int, int, int]:
    """A box (top, bottom, left, right) with sides ``sqrt(1 - lam)`` of the image's, centred
    at a uniform point and clipped to the image (so its area can be smaller)."""
    ratio = math.sqrt(1 - lam)
    img_h, img_w = img_shape[-2:]
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    margin_y, margin_x = int(margin * cut_h), int(margin * cut_w)
    cy = rng.randint(margin_y, img_h - margin_y)
    cx = rng.randint(margin_x, img_w - margin_x)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, img_h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, img_w)
    return top, bottom, left, right


def rand_bbox_minmax(img_shape: Sequence[int], minmax: Sequence[float]) -> tuple[int, int, int, int]:
    """A box whose sides are uniform fractions of the image's in [min, max), placed uniformly inside."""
    if len(minmax) != 2 or not 0 < minmax[0] < minmax[1] <= 1:
        raise ValueError(f"cutmix_minmax must be (min, max) with 0 < min < max <= 1, got {minmax}")
    img_h, img_w = img_shape[-2:]
    cut_h = rng.randint(int(img_h * minmax[0]), int(img_h * minmax[1]))
    cut_w = rng.randint(int(img_w * minmax[0]), int(img_w * minmax[1]))
    top = rng.randint(0, img_h - cut_h)
    left = rng.randint(0, img_w - cut_w)
    return top, top + cut_h, left, left + cut_w


def cutmix_bbox_and_lam(
    img_shape: Sequence[int], lam: float, ratio_minmax: Optional[Sequence[float]] = None, correct_lam: bool = True
) -> tuple[tuple[int, int, int, int], float]:
    """A CutMix box and the weight to use with it: with `correct_lam` (or `ratio_minmax`)
    the weight is 1 - box area / image area, the fraction of the image kept."""
    if ratio_minmax is not None:
        box = rand_bbox_minmax(img_shape, ratio_minmax)
    else:
        box = rand_bbox(img_shape, lam)
    if correct_lam or ratio_minmax is not None:
        top, bottom, left, right = box
        lam = 1.0 - (bottom - top) * (right - left) / float(img_shape[-2] * img_shape[-1])
    return box, lam


class Mixup:
    """Mixup / CutMix for a batch of images and class labels (timm's "batch" mode).

    Per batch, with probability `prob`: if both `mixup_alpha` and `cutmix_alpha` are > 0,
    CutMix with probability `switch_prob`, else Mixup; ``lam ~ Beta(alpha, alpha)`` of the
    chosen one. CutMix pastes a box of the reversed batch into each image (`cutmix_minmax`
    sets the box's side fractions instead of ``lam``); `correct_lam` makes the targets' weight
    the exact kept area. Targets are label-smoothed by `label_smoothing` over `num_classes`.
    The inputs are not modified.
    """

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Optional[Sequence[float]] = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
    ) -> None:
        if mode != "batch":
            raise ValueError(f"Mixup mode {mode!r} is not supported: use mode='batch' (as LiBai's configs do)")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"Mixup alphas must be >= 0, got mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}")
        if not 0.0 <= prob <= 1.0 or not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"Mixup prob and switch_prob must be in [0, 1], got {prob}, {switch_prob}")
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"Mixup num_classes must be a positive integer, got {num_classes!r}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.cutmix_minmax = None if cutmix_minmax is None else tuple(float(v) for v in cutmix_minmax)
        if self.cutmix_minmax is not None:
            self.cutmix_alpha = 1.0  # timm: a minmax box ignores alpha but turns CutMix on
        self.mix_prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.mode = mode
        self.correct_lam = bool(correct_lam)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)
        self.mixup_enabled = True  # timm's switch to stop mixing late in training
        self._pending_key: Optional[tuple[int, int]] = None

    def seed_next_batch(self, seed: int, position: int) -> None:
        """Make the next call draw from a generator seeded from (seed, position)."""
        self._pending_key = (int(seed), int(position))

    def _draw(self) -> tuple[float, bool]:
        """(lam, use_cutmix) for one batch."""
        if not self.mixup_enabled or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return 1.0, False
        if rng.rand() >= self.mix_prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = rng.rand() < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        return rng.beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha), use_cutmix

    def _mix(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        lam, use_cutmix = self._draw()
        if lam == 1.0:
            return images, 1.0
        if use_cutmix:
            (top, bottom, left, right), lam = cutmix_bbox_and_lam(
                images.shape, lam, ratio_minmax=self.cutmix_minmax, correct_lam=self.correct_lam
            )
            mixed = images.clone()
            mixed[..., top:bottom, left:right] = images.flip(0)[..., top:bottom, left:right]
            return mixed, lam
        return images * lam + images.flip(0) * (1.0 - lam), lam

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed images ``B x C x H x W`` and soft targets ``B x num_classes`` (float32)."""
        if images.dim() != 4 or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"Mixup takes images B x C x H x W and class labels B, got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        if images.shape[0] % 2:
            raise ValueError(
                f"Mixup needs an even batch, got {images.shape[0]} images: make train.train_micro_batch_size even"
            )
        if labels.is_floating_point():
            raise TypeError("Mixup takes class indices as labels, got floats: apply Mixup once, to integer labels")
        key, self._pending_key = self._pending_key, None
        scope = rng.seeded_rng(key[0], rng.MIXUP_STREAM, key[1]) if key else contextlib.nullcontext()
        with scope:
            images, lam = self._mix(images)
        return images, mixup_target(labels, self.num_classes, lam, self.label_smoothing)

    def __repr__(self) -> str:
        return (f"Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, prob={self.mix_prob}, "
                f"switch_prob={self.switch_prob}, label_smoothing={self.label_smoothing}, num_classes={self.num_classes})")
