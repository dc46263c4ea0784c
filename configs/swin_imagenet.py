"""LiBai's Swin-T ImageNet config (`configs/swin_imagenet.py`), here.

Swin-Tiny (patch 4, window 7) at 224 x 224 on the ImageNet folder of
configs/common/data/imagenet.py, Mixup/CutMix with soft-target cross entropy, AdamW lr 1e-3,
300 epochs with 20 of warm-up, AMP. Point the data at the folder
(`dataloader.train.dataset.0.root=ROOT dataloader.test.0.dataset.root=ROOT`), then
`bash tools/train.sh tools/train_net.py configs/swin_imagenet.py 8`.
"""
from libai.config import LazyCall
from libai.data.vision.data import Mixup
from libai.data.vision.loss.cross_entropy import SoftTargetCrossEntropy

from .common.data.imagenet import dataloader
from .common.models.graph import graph
from .common.models.swin.swin_tiny_patch4_window7_224 import model
from .common.optim import optim
from .common.train import train

dataloader.train.dataset[0].root = "/path/to/imagenet"
dataloader.test[0].dataset.root = "/path/to/imagenet"

dataloader.train.mixup_func = LazyCall(Mixup)(
    mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch", num_classes=1000
)

model.cfg.num_classes = 1000
model.cfg.loss_func = SoftTargetCrossEntropy()

optim.lr = 1e-3
optim.eps = 1e-8
optim.weight_decay = 0.05
optim.params.clip_grad_max_norm = None
optim.params.clip_grad_norm_type = None

train.train_micro_batch_size = 128
train.test_micro_batch_size = 128
train.train_epoch = 300
train.warmup_ratio = 20 / 300
# LiBai's file sets `train.eval_period`, a key its trainer never reads; the evaluation
# period it means is this one.
train.evaluation.eval_period = 1562
train.log_period = 100

train.scheduler.warmup_factor = 0.001
train.scheduler.alpha = 0.01
train.scheduler.warmup_method = "linear"

train.amp.enabled = True
__all__ = ["dataloader", "graph", "model", "optim", "train"]
