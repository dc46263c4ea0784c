"""LiBai's ResMLP-12 ImageNet config (`configs/resmlp_imagenet.py`), here.

ResMLP-12 at 224 x 224 on the ImageNet folder of configs/common/data/imagenet.py (test
images resized to 224 / 0.9 then center-cropped), Mixup/CutMix with soft-target cross
entropy, LAMB lr 5e-3 (for 2048 images a step) without weight decay on the affine and
layer-scale parameters, 400 epochs with 5 of warm-up, AMP. LiBai names OneFlow's LAMB
(`flow.optim.LAMB`); torch has none, so this config names `libai.optim.LAMB`.
"""
from libai.config import LazyCall
from libai.data.vision import transforms
from libai.data.vision.data import Mixup
from libai.data.vision.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from libai.data.vision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.data.vision.transforms import InterpolationMode
from libai.optim import LAMB

from .common.data.imagenet import dataloader
from .common.models.graph import graph
from .common.models.resmlp.resmlp_12 import model
from .common.optim import optim
from .common.train import train

train.output_dir = "./output_resmlp"
dataloader.train.dataset[0].root = "/path/to/imagenet"
dataloader.test[0].dataset.root = "/path/to/imagenet"

resmlp_test_aug = LazyCall(transforms.Compose)(
    transforms=[
        LazyCall(transforms.Resize)(size=int(224 / 0.9), interpolation=InterpolationMode.BICUBIC),
        LazyCall(transforms.CenterCrop)(size=224),
        LazyCall(transforms.ToTensor)(),
        LazyCall(transforms.Normalize)(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
    ]
)
dataloader.test[0].dataset.transform = resmlp_test_aug

model.cfg.num_classes = 1000
model.cfg.loss_func = SoftTargetCrossEntropy()
dataloader.train.mixup_func = LazyCall(Mixup)(
    mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch", num_classes=model.cfg.num_classes
)

optim._target_ = LAMB
optim.lr = 5e-3  # 256 x 8 = 2048 images a step
optim.eps = 1e-8
optim.weight_decay = 0.2
optim.params.clip_grad_max_norm = None
optim.params.clip_grad_norm_type = None
optim.params.overrides = {
    "alpha": {"weight_decay": 0.0},
    "beta": {"weight_decay": 0.0},
    "gamma_1": {"weight_decay": 0.0},
    "gamma_2": {"weight_decay": 0.0},
}

train.train_micro_batch_size = 256
train.test_micro_batch_size = 64
train.train_epoch = 400
train.warmup_ratio = 5 / 400
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
