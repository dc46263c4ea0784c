"""Building a model, or its graph, from a config: LiBai's `libai.models.build_model` and
`build_graph`, which `DefaultTrainer.build_model` / `build_graph` call."""
from __future__ import annotations

import logging

import torch
from torch import nn

from libai.config import instantiate
from libai.utils import distributed as dist

logger = logging.getLogger(__name__)


def build_model(cfg) -> nn.Module:
    """Instantiate the model config `cfg` (e.g. `cfg.model`) on this rank's device."""
    model = instantiate(cfg)
    model.to(dist.get_device())
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("Model: %s (%.3fM parameters)", type(model).__name__, num_params / 1e6)
    return model


def build_graph(
    cfg, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, lr_scheduler=None, is_train: bool = False
) -> nn.Module:
    """Wrap `model` as `cfg.graph.train_graph` (`is_train`) or `cfg.graph.eval_graph`: a
    `GraphBase`, i.e. the model compiled by `torch.compile`."""
    graph_cfg = cfg.graph.train_graph if is_train else cfg.graph.eval_graph
    graph_cfg.model = model
    if is_train:
        graph_cfg.optimizer = optimizer
        graph_cfg.lr_scheduler = lr_scheduler
        graph_cfg.grad_acc_steps = cfg.train.num_accumulation_steps
    return instantiate(graph_cfg)
