"""flowvision.data: Mixup/CutMix, RandAugment, random erasing and dataset constants."""
from libai.data.vision.data.auto_augment import rand_augment_transform
from libai.data.vision.data.constants import (
    DEFAULT_CROP_PCT,
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_DPN_MEAN,
    IMAGENET_DPN_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
)
from libai.data.vision.data.mixup import Mixup
from libai.data.vision.data.random_erasing import RandomErasing

__all__ = [
    "DEFAULT_CROP_PCT",
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "IMAGENET_DPN_MEAN",
    "IMAGENET_DPN_STD",
    "IMAGENET_INCEPTION_MEAN",
    "IMAGENET_INCEPTION_STD",
    "Mixup",
    "RandomErasing",
    "rand_augment_transform",
]
