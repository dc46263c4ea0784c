"""LiBai's lazy configs: record calls in Python config files, build them later.

    from libai.config import LazyCall, LazyConfig, instantiate, get_config

    train = get_config("common/train.py").train      # packaged defaults
    train.update(dict(dist=dict(tensor_parallel_size=2)))   # merges, keeps other keys
    cfg = LazyConfig.load("projects/mnist/config.py")
    LazyConfig.apply_overrides(cfg, ["train.train_iter=100"])
    model = instantiate(cfg.model)
"""
from .config import configurable, get_config, packaged_config_dirs, try_get_key
from .instantiate import instantiate, locate
from .lazy import ConfigKeyError, ConfigKeyWarning, ConfigOverrideError, LazyCall, LazyConfig

__all__ = [
    "LazyCall",
    "LazyConfig",
    "instantiate",
    "locate",
    "get_config",
    "packaged_config_dirs",
    "configurable",
    "try_get_key",
    "ConfigKeyError",
    "ConfigOverrideError",
    "ConfigKeyWarning",
]
