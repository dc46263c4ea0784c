"""The iGPT project (transformer backbone, classify=True), shrunk for the layout tests:
7 x 7 digits (49 pixel tokens), 4 layers of width 32."""
from projects.igpt.config import dataloader, graph, model, optim, train  # noqa: F401

for pixels in (dataloader.train.dataset[0], dataloader.test[0].dataset):
    pixels.image_size = 7
model.backbone.update(max_positions=49, hidden_size=32)
model.hidden_size = 32
train.update(dict(train_micro_batch_size=2, global_batch_size=16, train_epoch=0, train_iter=10, log_period=1,
                  evaluation=dict(enabled=False), checkpointer=dict(period=100)))
