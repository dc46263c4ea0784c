"""LiBai's ViT-B/16 ImageNet config (`configs/vit_imagenet.py`), here.

ViT-Base/16 at 224 x 224 on the ImageNet folder of configs/common/data/imagenet.py, with
Mixup/CutMix and soft-target cross entropy, AdamW (lr 1e-3 for 1024 images a step), 300
epochs with 5 of warm-up, AMP. Point the data at the folder
(`dataloader.train.dataset.0.root=ROOT dataloader.test.0.dataset.root=ROOT`), then
`bash tools/train.sh tools/train_net.py configs/vit_imagenet.py 8`.
"""
from libai.config import LazyCall
from libai.data.vision.data import Mixup
from libai.data.vision.loss.cross_entropy import SoftTargetCrossEntropy

from .common.data.imagenet import dataloader
from .common.models.graph import graph
from .common.models.vit.vit_base_patch16_224 import model
from .common.optim import optim
from .common.train import train

dataloader.train.dataset[0].root = "/path/to/imagenet"
dataloader.test[0].dataset.root = "/path/to/imagenet"

model.cfg.num_classes = 1000
model.cfg.loss_func = SoftTargetCrossEntropy()
dataloader.train.mixup_func = LazyCall(Mixup)(
    mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch", num_classes=model.cfg.num_classes
)

optim.lr = 1e-3  # 5e-4 * 1024 (batch size) / 512
optim.eps = 1e-8
optim.weight_decay = 0.05
optim.params.clip_grad_max_norm = None
optim.params.clip_grad_norm_type = None
optim.params.overrides = {"pos_embed": {"weight_decay": 0.0}, "cls_token": {"weight_decay": 0.0}}

train.train_micro_batch_size = 128
train.test_micro_batch_size = 128
train.train_epoch = 300
train.warmup_ratio = 5 / 300
train.evaluation.eval_period = 1000
train.log_period = 1

train.scheduler.warmup_factor = 0.001
train.scheduler.alpha = 0.01
train.scheduler.warmup_method = "linear"

train.amp.enabled = True

train.dist.pipeline_num_layers = model.cfg.depth
train.dist.data_parallel_size = 1
train.dist.tensor_parallel_size = 1
train.dist.pipeline_parallel_size = 1
__all__ = ["dataloader", "graph", "model", "optim", "train"]
