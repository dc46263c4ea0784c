"""LiBai's SwinV2-T CIFAR-100 config (`configs/swinv2_cifar100.py`), here.

SwinV2-Tiny (patch 4, window 8) at 256 x 256 on CIFAR-100 (configs/common/data/cifar100.py
with 256-pixel crops), Mixup/CutMix with soft-target cross entropy, AdamW lr 5e-4 without
weight decay on norms, biases, position tables and logit scales, 8 accumulation steps.
"""
from libai.config import LazyCall
from libai.data.vision import transforms
from libai.data.vision.data import Mixup
from libai.data.vision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.data.vision.transforms import InterpolationMode
from libai.data.vision.transforms.functional import str_to_interp_mode
from libai.optim import decay_and_no_decay_groups

from .common.data.cifar100 import CIFAR100_TRAIN_MEAN, CIFAR100_TRAIN_STD, dataloader
from .common.models.graph import graph
from .common.models.swinv2.swinv2_tiny_patch4_window8_256 import model
from .common.optim import optim
from .common.train import train

dataloader.train.mixup_func = LazyCall(Mixup)(
    mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch", num_classes=100
)
dataloader.train.dataset[0].transform = LazyCall(transforms.Compose)(
    transforms=[
        LazyCall(transforms.RandomResizedCrop)(
            size=(256, 256), scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolation=str_to_interp_mode("bicubic")
        ),
        LazyCall(transforms.RandomHorizontalFlip)(),
        LazyCall(transforms.ToTensor)(),
        LazyCall(transforms.Normalize)(mean=CIFAR100_TRAIN_MEAN, std=CIFAR100_TRAIN_STD),
    ]
)
dataloader.test[0].dataset.transform = LazyCall(transforms.Compose)(
    transforms=[
        LazyCall(transforms.Resize)(size=256, interpolation=InterpolationMode.BICUBIC),
        LazyCall(transforms.CenterCrop)(size=256),
        LazyCall(transforms.ToTensor)(),
        LazyCall(transforms.Normalize)(mean=CIFAR100_TRAIN_MEAN, std=CIFAR100_TRAIN_STD),
    ]
)

model.cfg.num_classes = 100
model.cfg.loss_func = SoftTargetCrossEntropy()

optim.lr = 5e-4
optim.eps = 1e-8
optim.weight_decay = 0.05
optim.params = LazyCall(decay_and_no_decay_groups)(
    skip_list=("absolute_pos_embed",),
    skip_keywords=("cpb_mlp", "logit_scale", "relative_position_bias_table"),
)

train.train_micro_batch_size = 32
train.num_accumulation_steps = 8
train.test_micro_batch_size = 32
train.train_epoch = 300
train.warmup_ratio = 20 / 300
train.evaluation.eval_period = 1562
train.log_period = 10

train.scheduler.warmup_factor = 5e-7
train.scheduler.alpha = 0.0
train.scheduler.warmup_method = "linear"

train.dist.data_parallel_size = 1
train.dist.tensor_parallel_size = 1
train.dist.pipeline_parallel_size = 1
train.dist.pipeline_num_layers = sum(model.cfg.depths)
train.output_dir = "./output"
train.rdma_enabled = False

train.amp.enabled = False
train.activation_checkpoint.enabled = False
graph.enabled = False
__all__ = ["dataloader", "graph", "model", "optim", "train"]
