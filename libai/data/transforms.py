"""Image transforms under their original name (used by the MNIST and ViT projects).

They are `libai.data.vision.transforms`, which works on PIL images and tensors and seeds its
random transforms per sample inside `libai.data.vision.augmentation_rng`.
"""
from libai.data.vision.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)

__all__ = [
    "Compose",
    "ToTensor",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "CenterCrop",
    "RandomResizedCrop",
]
