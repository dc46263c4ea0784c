"""The layout tests' small Swin (tests/configs/zoo/swin.py) as a Swin Transformer V2: the
same sizes, data and training, V2's blocks (cosine attention, continuous position bias)."""
from libai.models import SwinTransformerV2

from .swin import dataloader, graph, model, optim, train  # noqa: F401

model._target_ = SwinTransformerV2
