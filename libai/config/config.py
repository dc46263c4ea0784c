"""Config helpers: `configurable`, `try_get_key` and `get_config` (the packaged defaults)."""
from __future__ import annotations

import functools
import importlib.util
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from .lazy import LazyConfig, nearest_key

__all__ = ["configurable", "try_get_key", "get_config", "packaged_config_dirs"]


# --------------------------------------------------------------------------------------
# configurable
# --------------------------------------------------------------------------------------


def configurable(init_func: Optional[Callable] = None, *, from_config: Optional[Callable] = None) -> Any:
    """Let a class `__init__` or a function also be called with a config.

    On `__init__` (the class defines a classmethod `from_config(cls, cfg, ...)` returning
    the `__init__` keyword arguments)::

        class Model(nn.Module):
            @configurable
            def __init__(self, hidden_size, num_layers=2): ...

            @classmethod
            def from_config(cls, cfg):
                return {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers}

        Model(cfg)               # via from_config
        Model(cfg=cfg)           # the same
        Model(hidden_size=8)     # plain call

    On a function: `@configurable(from_config=lambda cfg, **kw: {...})`.

    A call "with a config" is one whose first positional argument, or `cfg=` keyword, is a
    mapping (dict or DictConfig; a dict is turned into a DictConfig, so `from_config` can
    read `cfg.key`). Extra keyword arguments that `from_config` does not take
    are passed to the wrapped function as they are, overriding what `from_config` returned.
    """
    if init_func is not None:
        if from_config is not None:
            raise TypeError("@configurable on __init__ takes no from_config: define a from_config classmethod")
        if not inspect.isfunction(init_func) or init_func.__name__ != "__init__":
            raise TypeError(
                "@configurable without arguments decorates a class's __init__; "
                "for a function write @configurable(from_config=...)"
            )
        return _wrap_init(init_func)
    if from_config is None:
        return configurable  # `@configurable()` is the same as `@configurable`
    if not callable(from_config):
        raise TypeError(f"configurable(from_config=...) needs a function, got {from_config!r}")

    def decorator(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if _called_with_cfg(args, kwargs):
                return func(**_args_from_config(from_config, args, kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config  # type: ignore[attr-defined]
        return wrapped

    return decorator


def _wrap_init(init_func: Callable) -> Callable:
    @functools.wraps(init_func)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        if not _called_with_cfg(args, kwargs):
            init_func(self, *args, **kwargs)
            return
        from_config = getattr(type(self), "from_config", None)
        if from_config is None:
            raise TypeError(
                f"{type(self).__name__} was called with a config, but has no from_config classmethod: "
                "add `@classmethod def from_config(cls, cfg): return {...}`"
            )
        if not inspect.ismethod(from_config):
            raise TypeError(f"{type(self).__name__}.from_config must be a classmethod")
        init_func(self, **_args_from_config(from_config, args, kwargs))

    return wrapped


def _called_with_cfg(args: tuple, kwargs: dict) -> bool:
    """True if the first positional argument or `cfg=` is a mapping (a config)."""
    if args:
        return isinstance(args[0], (Mapping, DictConfig))
    return isinstance(kwargs.get("cfg"), (Mapping, DictConfig))


def _as_config_arg(args: tuple, kwargs: dict) -> tuple:
    """A plain dict config becomes a DictConfig, so from_config can use `cfg.key`."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping) and not isinstance(value, DictConfig):
            return DictConfig(dict(value), flags={"allow_objects": True})
        return value

    if args:
        return (convert(args[0]),) + tuple(args[1:]), kwargs
    return args, {**kwargs, "cfg": convert(kwargs["cfg"])}


def _args_from_config(from_config: Callable, args: tuple, kwargs: dict) -> dict:
    """Call `from_config` with the arguments it accepts; the rest are passed through."""
    args, kwargs = _as_config_arg(args, kwargs)
    params = inspect.signature(from_config).parameters
    names = list(params)
    if not names or names[0] != "cfg":
        raise TypeError(f"{getattr(from_config, '__qualname__', from_config)} must take 'cfg' as its first argument")
    takes_any = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
    if takes_any:
        result = from_config(*args, **kwargs)
        extra: dict = {}
    else:
        extra = {k: v for k, v in kwargs.items() if k not in params}
        accepted = {k: v for k, v in kwargs.items() if k in params}
        result = from_config(*args, **accepted)
    if not isinstance(result, Mapping):
        raise TypeError(
            f"{getattr(from_config, '__qualname__', from_config)} returned {type(result).__name__}; "
            "from_config must return a dict of keyword arguments"
        )
    return {**result, **extra}


# --------------------------------------------------------------------------------------
# try_get_key
# --------------------------------------------------------------------------------------

_NOT_FOUND = object()


def try_get_key(cfg: Any, *keys: str, default: Any = None) -> Any:
    """The value of the first dotted key in `keys` that `cfg` has, else `default`.

    `try_get_key(cfg, "train.amp.enabled", default=False)`. A key present with the value
    None counts as present (None is returned). Works on DictConfigs and plain dicts.
    """
    for key in keys:
        if OmegaConf.is_config(cfg):
            value = OmegaConf.select(cfg, key, default=_NOT_FOUND, throw_on_missing=False)
        else:
            value = _select_plain(cfg, key)
        if value is not _NOT_FOUND:
            return value
    return default


def _select_plain(obj: Any, key: str) -> Any:
    """Dotted lookup through plain mappings, attributes and list indices."""
    for part in key.split("."):
        if isinstance(obj, Mapping):
            if part not in obj:
                return _NOT_FOUND
            obj = obj[part]
        elif isinstance(obj, (list, tuple)) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return _NOT_FOUND
    return obj


# --------------------------------------------------------------------------------------
# get_config
# --------------------------------------------------------------------------------------


def packaged_config_dirs() -> list:
    """Folders that may hold LiBai's packaged configs, most specific first.

    An installed package has them at `libai/config/configs/` (setup.py maps the repository's
    `configs/` there); an editable install maps that package name to `<repo>/configs/`;
    a source checkout has them at `<repo>/configs/`.
    """
    here = Path(__file__).resolve().parent
    candidates = [here / "configs"]
    try:
        spec = importlib.util.find_spec("libai.config.configs")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        candidates.extend(Path(p) for p in (spec.submodule_search_locations or []))
    candidates.append(here.parents[1] / "configs")
    dirs: list = []
    for candidate in candidates:
        if candidate.is_dir() and candidate.resolve() not in dirs:
            dirs.append(candidate.resolve())
    return dirs


def get_config(config_path: str) -> DictConfig:
    """Load one of LiBai's packaged configs, e.g. `get_config("common/train.py")`.

    `config_path` is relative to the `configs/` folder. Each call returns fresh objects, so
    `train = get_config("common/train.py").train` can be changed freely.
    """
    dirs = packaged_config_dirs()
    relative = Path(config_path)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"get_config({config_path!r}): give a path relative to LiBai's configs/ folder")
    for root in dirs:
        if (root / relative).is_file():
            return LazyConfig.load(root / relative)
    available = sorted(
        str(p.relative_to(root)).replace("\\", "/")
        for root in dirs
        for p in root.rglob("*")
        if p.suffix in (".py", ".yaml", ".yml") and p.is_file() and "__pycache__" not in p.parts
    )
    if not dirs:
        raise FileNotFoundError(
            f"get_config({config_path!r}): LiBai's packaged configs folder was not found "
            f"(looked for {Path(__file__).resolve().parent / 'configs'}); reinstall with `pip install -e .`"
        )
    near = nearest_key(str(relative).replace("\\", "/"), available)
    raise FileNotFoundError(
        f"get_config({config_path!r}): no such packaged config in {', '.join(str(d) for d in dirs)}"
        + (f"; the nearest is {near!r}" if near else "")
        + ". Fix the path (it is relative to configs/)."
    )
