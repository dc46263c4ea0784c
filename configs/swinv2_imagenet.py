"""LiBai's SwinV2-T ImageNet config (`configs/swinv2_imagenet.py`), here.

SwinV2-Tiny (patch 4, window 8) at 256 x 256 on the ImageNet folder of
configs/common/data/imagenet.py with 256-pixel crops, Mixup/CutMix with soft-target cross
entropy, AdamW lr 1e-3 without weight decay on norms, biases, position tables and logit
scales, AMP. Point the data at the folder
(`dataloader.train.dataset.0.root=ROOT dataloader.test.0.dataset.root=ROOT`).
"""
from libai.config import LazyCall
from libai.data.vision import transforms
from libai.data.vision.data import Mixup
from libai.data.vision.data.auto_augment import rand_augment_transform
from libai.data.vision.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from libai.data.vision.data.random_erasing import RandomErasing
from libai.data.vision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.data.vision.transforms import InterpolationMode
from libai.data.vision.transforms.functional import str_to_interp_mode
from libai.optim import decay_and_no_decay_groups

from .common.data.imagenet import dataloader
from .common.models.graph import graph
from .common.models.swinv2.swinv2_tiny_patch4_window8_256 import model
from .common.optim import optim
from .common.train import train

dataloader.train.dataset[0].root = "/path/to/imagenet"
dataloader.test[0].dataset.root = "/path/to/imagenet"

dataloader.train.mixup_func = LazyCall(Mixup)(
    mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch", num_classes=1000
)
dataloader.train.dataset[0].transform = LazyCall(transforms.Compose)(
    transforms=[
        LazyCall(transforms.RandomResizedCrop)(
            size=256, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolation=InterpolationMode.BICUBIC
        ),
        LazyCall(transforms.RandomHorizontalFlip)(p=0.5),
        LazyCall(rand_augment_transform)(
            config_str="rand-m9-mstd0.5-inc1",
            hparams=dict(
                translate_const=int(256 * 0.45),
                img_mean=tuple(min(255, round(255 * x)) for x in IMAGENET_DEFAULT_MEAN),
                interpolation=str_to_interp_mode("bicubic"),
            ),
        ),
        LazyCall(transforms.ToTensor)(),
        LazyCall(transforms.Normalize)(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
        LazyCall(RandomErasing)(probability=0.25, mode="pixel", max_count=1, num_splits=0, device="cpu"),
    ]
)
dataloader.test[0].dataset.transform = LazyCall(transforms.Compose)(
    transforms=[
        LazyCall(transforms.Resize)(size=256, interpolation=InterpolationMode.BICUBIC),
        LazyCall(transforms.CenterCrop)(size=256),
        LazyCall(transforms.ToTensor)(),
        LazyCall(transforms.Normalize)(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
    ]
)

model.cfg.num_classes = 1000
model.cfg.loss_func = SoftTargetCrossEntropy()

optim.lr = 1e-3  # for 1024 images a step
optim.eps = 1e-8
optim.weight_decay = 0.05
optim.params = LazyCall(decay_and_no_decay_groups)(
    skip_list=("absolute_pos_embed",),
    skip_keywords=("cpb_mlp", "logit_scale", "relative_position_bias_table"),
)

train.train_micro_batch_size = 128
train.test_micro_batch_size = 128
train.train_epoch = 300
train.warmup_ratio = 20 / 300
# LiBai's file sets `train.eval_period`, a key its trainer never reads; the evaluation
# period it means is this one.
train.evaluation.eval_period = 1562
train.log_period = 100
graph.enabled = False
train.rdma_enabled = True

train.scheduler.warmup_factor = 0.001
train.scheduler.alpha = 0.01
train.scheduler.warmup_method = "linear"

train.amp.enabled = True
__all__ = ["dataloader", "graph", "model", "optim", "train"]
