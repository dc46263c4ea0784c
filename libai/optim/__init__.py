"""Optimizer construction with LiBai's parameter-group rules."""

from .build import (
    build_optimizer,
    decay_and_no_decay_groups,
    get_default_optimizer_params,
    is_norm_module,
    reduce_param_groups,
)
from .lamb import LAMB

__all__ = [
    "LAMB",
    "build_optimizer",
    "decay_and_no_decay_groups",
    "get_default_optimizer_params",
    "is_norm_module",
    "reduce_param_groups",
]
