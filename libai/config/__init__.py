"""LiBai's lazy configs: record calls in Python config files, build them later.

    from libai.config import LazyCall, LazyConfig, instantiate, get_config, merge_update

    train = get_config("common/train.py").train      # packaged defaults
    merge_update(train, dict(dist=dict(tensor_parallel_size=2)))   # keeps other dist keys
    cfg = LazyConfig.load("projects/mnist/config.py")
    LazyConfig.apply_overrides(cfg, ["train.train_iter=100"])
    model = instantiate(cfg.model)

Inside a config file `train.update(dict(...))` merges the same way (only while
`LazyConfig.load` runs the file; importing libai leaves OmegaConf unchanged).
"""
from .arguments import default_argument_parser
from .checks import check_train_config
from .config import configurable, get_config, packaged_config_dirs, try_get_key
from .instantiate import instantiate, locate
from .lazy import (
    ConfigFileError,
    ConfigImportError,
    ConfigKeyError,
    ConfigKeyWarning,
    ConfigOverrideError,
    ConfigValueError,
    LazyCall,
    LazyConfig,
    merge_update,
)

__all__ = [
    "LazyCall",
    "LazyConfig",
    "instantiate",
    "locate",
    "get_config",
    "packaged_config_dirs",
    "configurable",
    "try_get_key",
    "merge_update",
    "check_train_config",
    "default_argument_parser",
    "ConfigKeyError",
    "ConfigOverrideError",
    "ConfigKeyWarning",
    "ConfigValueError",
    "ConfigFileError",
    "ConfigImportError",
]
