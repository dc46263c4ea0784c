"""tests/configs/zoo/igpt.py with the attention-free backbone: the task is unchanged."""
from projects.igpt.modeling import CausalConvNet
from tests.configs.zoo.igpt import dataloader, graph, model, optim, train  # noqa: F401

model.backbone._target_ = CausalConvNet
