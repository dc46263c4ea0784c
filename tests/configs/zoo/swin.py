"""A small Swin Transformer on the ViT MNIST project's data, for the layout tests.

28x28 digits in 2x2 patches: a 14x14 token map in 7x7 windows (the second block of the
first stage shifted), merged to 7x7 (one window) for the second stage; 4 blocks in all,
so `pipeline_num_layers=4` (two per stage under pp2).
"""
from libai.config import LazyCall
from libai.models import SwinTransformer
from projects.vit_mnist.config import dataloader, graph, optim, train  # noqa: F401

model = LazyCall(SwinTransformer)(
    img_size=28,
    patch_size=2,
    in_chans=1,
    num_classes=10,
    embed_dim=16,
    depths=[2, 2],
    num_heads=[2, 4],
    window_size=7,
    mlp_ratio=2.0,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.0,
)
train.update(dict(train_micro_batch_size=2, global_batch_size=16, train_epoch=0, train_iter=10, log_period=1,
                  evaluation=dict(enabled=False), checkpointer=dict(period=100)))
train.dist.pipeline_num_layers = 4
