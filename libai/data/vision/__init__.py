"""The parts of flowvision that LiBai's vision configs import, under `libai.data.vision`.

A LiBai config ports by replacing ``flowvision`` with ``libai.data.vision``::

    from libai.data.vision import transforms
    from libai.data.vision.transforms import InterpolationMode
    from libai.data.vision.transforms.functional import str_to_interp_mode
    from libai.data.vision.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from libai.data.vision.data.auto_augment import rand_augment_transform
    from libai.data.vision.data.random_erasing import RandomErasing
    from libai.data.vision.data import Mixup
    from libai.data.vision.loss.cross_entropy import SoftTargetCrossEntropy

Random transforms are seeded per sample by `augmentation_rng(index)` (see `rng`), so a
sample's augmentation depends only on (seed, index, epoch), never on the layout or workers.
"""
from libai.data.vision import data, loss, rng, transforms
from libai.data.vision.rng import SampleIndex, augmentation_rng

__all__ = ["SampleIndex", "augmentation_rng", "data", "loss", "rng", "transforms"]
