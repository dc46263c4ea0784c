"""Model helpers: weight initialisers, graph wrapper and Hugging Face weight loaders."""
from .graph_base import GraphBase
from .weight_init import init_method_normal, init_method_trunc_normal, scaled_init_method_normal

__all__ = ["GraphBase", "init_method_normal", "init_method_trunc_normal", "scaled_init_method_normal"]
