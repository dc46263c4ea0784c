"""LiBai's ResMLP-12 config on the ViT MNIST project's data, shrunk for the layout tests:
4 blocks of width 32 over 16 patches of 7x7 (drop path off: its per-sample draws depend on
how the batch is split)."""
from libai.config import get_config
from libai.optim import LAMB
from projects.vit_mnist.config import dataloader, graph, optim, train  # noqa: F401

model = get_config("common/models/resmlp/resmlp_12.py").model
model.cfg.update(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=4, drop_path_rate=0.0)
train.update(dict(train_micro_batch_size=2, global_batch_size=16, train_epoch=0, train_iter=10, log_period=1,
                  evaluation=dict(enabled=False), checkpointer=dict(period=100)))

# LiBai's ResMLP optimizer (configs/resmlp_imagenet.py): LAMB, whose trust ratio takes the
# norms of whole parameters, also when tensor parallelism splits them.
optim._target_ = LAMB
optim.lr = 0.05  # LiBai: 5e-3 for 2048 images a step; 10 steps of 16 need more to learn visibly
optim.weight_decay = 0.2
optim.params.overrides = {name: {"weight_decay": 0.0} for name in ("alpha", "beta", "gamma_1", "gamma_2")}
