"""The ViT MNIST project, shrunk for the layout tests: 4 layers of width 32."""
from projects.vit_mnist.config import dataloader, graph, model, optim, train  # noqa: F401

model.update(embed_dim=32, num_heads=4, patch_size=7)
train.update(dict(train_micro_batch_size=2, global_batch_size=16, train_epoch=0, train_iter=10, log_period=1,
                  evaluation=dict(enabled=False), checkpointer=dict(period=100)))
