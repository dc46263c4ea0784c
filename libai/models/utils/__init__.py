"""Model helpers: weight initialisers, graph wrapper and Hugging Face weight loaders."""
from .graph_base import GraphBase
from .weight_init import init_method_normal, init_method_trunc_normal, scaled_init_method_normal

__all__ = ["GraphBase", "init_method_normal", "init_method_trunc_normal", "scaled_init_method_normal"]


def __getattr__(name: str):
    """LiBai's projects import the weight loaders from here (`libai.models.utils.GPT2LoaderHuggerFace`);
    they live in `model_loader`, imported only when asked for, as it imports the models."""
    import importlib

    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    model_loader = importlib.import_module(f"{__name__}.model_loader")
    if name.startswith("_") or not hasattr(model_loader, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(model_loader, name)
