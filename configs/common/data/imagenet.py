"""LiBai's ImageNet data config: RandAugment + random erasing for training, resize and
center crop for testing, at 224 x 224 with ImageNet's mean and std.

The data is an ImageNet-style folder (nothing is downloaded):

    ROOT/train/<class>/*.JPEG
    ROOT/val/<class>/*.JPEG

Point both sections at it, e.g. `dataloader.train.dataset.0.root=ROOT dataloader.test.0.dataset.root=ROOT`.
Augmentation is seeded by `train.seed`, the sample and its epoch, so every layout sees the
same augmented images (see `libai.data.vision`).
"""
from omegaconf import OmegaConf

from libai.config import LazyCall
from libai.data.build import build_image_test_loader, build_image_train_loader
from libai.data.datasets import ImageNetDataset
from libai.data.vision import transforms
from libai.data.vision.data.auto_augment import rand_augment_transform
from libai.data.vision.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from libai.data.vision.data.random_erasing import RandomErasing
from libai.data.vision.transforms import InterpolationMode
from libai.data.vision.transforms.functional import str_to_interp_mode

train_aug = LazyCall(transforms.Compose)(
    transforms=[
        LazyCall(transforms.RandomResizedCrop)(
            size=224, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolation=InterpolationMode.BICUBIC
        ),
        LazyCall(transforms.RandomHorizontalFlip)(p=0.5),
        LazyCall(rand_augment_transform)(
            config_str="rand-m9-mstd0.5-inc1",
            hparams=dict(
                translate_const=int(224 * 0.45),
                img_mean=tuple(min(255, round(255 * x)) for x in IMAGENET_DEFAULT_MEAN),
                interpolation=str_to_interp_mode("bicubic"),
            ),
        ),
        LazyCall(transforms.ToTensor)(),
        LazyCall(transforms.Normalize)(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
        LazyCall(RandomErasing)(probability=0.25, mode="pixel", max_count=1, num_splits=0, device="cpu"),
    ]
)

test_aug = LazyCall(transforms.Compose)(
    transforms=[
        LazyCall(transforms.Resize)(size=256, interpolation=InterpolationMode.BICUBIC),
        LazyCall(transforms.CenterCrop)(size=224),
        LazyCall(transforms.ToTensor)(),
        LazyCall(transforms.Normalize)(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
    ]
)

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_image_train_loader)(
    dataset=[LazyCall(ImageNetDataset)(root="./dataset", train=True, transform=train_aug)],
    num_workers=4,
    mixup_func=None,
)
dataloader.test = [
    LazyCall(build_image_test_loader)(
        dataset=LazyCall(ImageNetDataset)(root="./dataset", train=False, transform=test_aug),
        num_workers=4,
    )
]
