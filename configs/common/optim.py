"""LiBai's default optimizer: AdamW, no weight decay on biases and norm weights.

`build_optimizer(cfg.optim, model)` sets `optim.params.model = model` and instantiates.
The clip_grad_* settings go into every parameter group; the trainer clips with them.
"""
import torch

from libai.config import LazyCall
from libai.optim import get_default_optimizer_params

optim = LazyCall(torch.optim.AdamW)(
    params=LazyCall(get_default_optimizer_params)(
        # params.model is set by build_optimizer
        clip_grad_max_norm=1.0,
        clip_grad_norm_type=2.0,
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
    ),
    lr=1e-4,
    weight_decay=0.01,
    betas=(0.9, 0.999),
    eps=1e-8,
)
