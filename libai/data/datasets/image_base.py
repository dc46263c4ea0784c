"""What the image-classification readers (ImageNet folders, CIFAR files) share: turning one
(PIL image, class index) into LiBai's `Instance(images=..., labels=...)` sample.

Each reader only says how to get sample `index` as a PIL image and a class index; the
transform is applied in one place, `_augment`, so that per-sample behaviour (seeding the
random transforms of sample `index`) is wired once for every reader.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import torch
from PIL import Image
from torch.utils.data import Dataset

from libai.data.structures import DistTensorData, Instance
from libai.data.transforms import ToTensor
from libai.data.vision import augmentation_rng

_TO_TENSOR = ToTensor()


def reject_unknown_arguments(owner: str, accepted: str, kwargs: dict) -> None:
    """Raise a TypeError naming the keyword arguments in `kwargs` that `owner` does not take."""
    if kwargs:
        raise TypeError(
            f"{owner} got unexpected argument(s) {sorted(kwargs)}: it accepts {accepted}"
        )


class ImageClassificationDataset(Dataset):
    """Base of the image readers: subclasses implement `__len__` and `_load(index)`.

    `__getitem__` returns `Instance(images=DistTensorData(image, placement_idx=0),
    labels=DistTensorData(label, placement_idx=-1))`. The PIL image goes through `transform`
    (as with torchvision/flowvision datasets); a result that is not a tensor yet (no
    transform, or one ending in a PIL image) is made one with `ToTensor()`: float C x H x W
    in [0, 1]. The class index goes through `target_transform` and becomes an int64 tensor.
    """

    transform: Optional[Callable]
    target_transform: Optional[Callable]

    def _load(self, index: int) -> tuple[Image.Image, int]:
        """Sample `index` as (RGB PIL image, class index)."""
        raise NotImplementedError

    def _augment(self, index: int, image: Any) -> Any:
        """Apply `transform` to the image of sample `index` (the image itself without one)."""
        if self.transform is None:
            return image
        # Random transforms draw from a generator seeded by (train.seed, epoch, index) that the
        # sampler attaches to `index`, so every layout and worker count augments alike.
        with augmentation_rng(index):
            return self.transform(image)

    def __getitem__(self, index: int) -> Instance:
        image, target = self._load(index)
        image = self._augment(index, image)
        if not isinstance(image, torch.Tensor):
            image = _TO_TENSOR(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        label = _label_tensor(target)
        return Instance(
            images=DistTensorData(image, placement_idx=0),
            # Labels are read by the loss on the last pipeline stage.
            labels=DistTensorData(label, placement_idx=-1),
        )


def _label_tensor(target: Any) -> torch.Tensor:
    """A class index as an int64 scalar tensor; other targets (e.g. soft labels) as given."""
    if isinstance(target, torch.Tensor):
        return target
    if isinstance(target, numbers.Integral):
        return torch.tensor(int(target), dtype=torch.long)
    return torch.as_tensor(target)
