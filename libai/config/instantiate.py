"""Turn recorded calls (`LazyCall(...)(...)` nodes) into objects.

A "LazyCall node" is a mapping with a `_target_` key: the callable (or its dotted import
path) plus the keyword arguments to call it with. `instantiate` builds such nodes
recursively; everything else passes through (see `instantiate` for the exact rules).
"""
from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Mapping
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig

try:  # omegaconf >= 2.4 keeps tuples as TupleConfig
    from omegaconf import TupleConfig
except ImportError:  # pragma: no cover - older omegaconf turns tuples into ListConfig
    TupleConfig = None  # type: ignore[assignment,misc]

__all__ = [
    "instantiate",
    "locate",
    "target_to_string",
    "is_lazy_node",
    "ConfigTargetError",
    "ConfigArgumentError",
]

logger = logging.getLogger(__name__)

TARGET_KEY = "_target_"


class ConfigTargetError(ImportError):
    """A LazyCall node whose `_target_` import path does not import."""


class ConfigArgumentError(TypeError):
    """A LazyCall node whose arguments do not fit its target's signature (an unknown or a
    missing argument), found before the target is called."""


def is_lazy_node(obj: Any) -> bool:
    """True if `obj` is a LazyCall node: a mapping (dict or DictConfig) with `_target_`."""
    if isinstance(obj, DictConfig):
        # `in` on a DictConfig hides keys whose value is '???'; keys() does not.
        return not obj._is_none() and not obj._is_missing() and TARGET_KEY in obj.keys()
    return isinstance(obj, Mapping) and TARGET_KEY in obj


def locate(name: str) -> Any:
    """Import the object named by a dotted path such as "torch.optim.AdamW".

    The longest importable module prefix is imported and the rest is read as attributes,
    so nested names ("pkg.module.Class.method") work. An import error raised *inside* an
    existing module is not hidden: only "that module does not exist" makes us try a
    shorter prefix.
    """
    if not isinstance(name, str) or not name or name.startswith(".") or name.endswith("."):
        raise ImportError(f"cannot locate {name!r}: expected a dotted import path like 'torch.optim.AdamW'")
    parts = name.split(".")
    module = None
    module_len = 0
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue  # this prefix is not a module: try a shorter one
            raise
        module_len = i
        break
    if module is None:
        raise ImportError(f"cannot locate {name!r}: no module named {parts[0]!r} (is the package installed?)")
    obj: Any = module
    for depth, attr in enumerate(parts[module_len:], start=module_len):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            owner = ".".join(parts[:depth])
            raise ImportError(f"cannot locate {name!r}: {owner!r} has no attribute {attr!r}") from None
    return obj


def target_to_string(obj: Any) -> Optional[str]:
    """The shortest dotted import path that `locate` maps back to `obj`, or None.

    None means `obj` cannot be named by an import path (a lambda, a class defined inside a
    function or in `__main__`, an instance, ...). Public re-exports are preferred:
    `torch.optim.adamw.AdamW` is written as "torch.optim.AdamW".
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if module == "__main__" or "<" in qualname:  # "<locals>", "<lambda>"
        return None
    module_parts = module.split(".")
    for i in range(1, len(module_parts) + 1):
        candidate = ".".join(module_parts[:i] + [qualname])
        try:
            found = locate(candidate)
            # `==` too: a bound method (Class.classmethod) is a new object on every access.
            if found is obj or bool(found == obj):
                return candidate
        except Exception:  # a prefix that does not re-export the name, or fails to import
            continue
    return None


def instantiate(cfg: Any) -> Any:
    """Build the objects that a config describes.

    - A LazyCall node (mapping with `_target_`): its arguments are instantiated first
      (recursively), then `_target_(**arguments)` is returned. `_target_` may be the
      callable itself or its dotted import path ("torch.nn.Linear").
    - A list / ListConfig (or tuple): each element is instantiated; a list (tuple) is returned.
    - A mapping without `_target_` is returned as is (a plain data dict, as in detectron2),
      unless LazyCall nodes hide inside it: then a copy of the same kind (dict or
      DictConfig) with those nodes instantiated is returned.
    - Anything else is returned unchanged.
    """
    if isinstance(cfg, (ListConfig, list)):
        return [instantiate(item) for item in cfg]
    if isinstance(cfg, tuple) or (TupleConfig is not None and isinstance(cfg, TupleConfig)):
        return tuple(instantiate(item) for item in cfg)
    if is_lazy_node(cfg):
        return _call_target(cfg)
    if isinstance(cfg, Mapping) and _contains_lazy_node(cfg):
        built = {key: instantiate(cfg[key]) for key in cfg.keys()}
        if isinstance(cfg, DictConfig):
            # Keep attribute access for callers that expect a config; objects are allowed.
            return DictConfig(built, flags={"allow_objects": True})
        return built
    return cfg


def _contains_lazy_node(obj: Any) -> bool:
    """True if a LazyCall node is nested anywhere inside `obj` (dicts and lists only)."""
    if is_lazy_node(obj):
        return True
    if isinstance(obj, Mapping):
        if isinstance(obj, DictConfig) and (obj._is_none() or obj._is_missing()):
            return False
        return any(_contains_lazy_node(_raw_value(obj, key)) for key in obj.keys())
    if isinstance(obj, (list, tuple, ListConfig)) or (TupleConfig is not None and isinstance(obj, TupleConfig)):
        if isinstance(obj, ListConfig) and (obj._is_none() or obj._is_missing()):
            return False
        return any(_contains_lazy_node(item) for item in obj)
    return False


def _raw_value(mapping: Mapping, key: Any) -> Any:
    """`mapping[key]`, but a missing ('???') config value reads as None instead of raising."""
    if isinstance(mapping, DictConfig):
        node = mapping._get_node(key)
        if node is not None and node._is_missing():
            return None
    return mapping[key]


def _node_path(cfg: Any) -> str:
    """The dotted key of a config node inside its root config ('' for a root or a dict)."""
    if isinstance(cfg, DictConfig):
        try:
            return str(cfg._get_full_key(None))
        except Exception:  # a detached node has no key
            return ""
    return ""


def _call_target(cfg: Mapping) -> Any:
    """Instantiate one LazyCall node: resolve `_target_`, build its arguments, call it."""
    where = _node_path(cfg)
    where_text = f" at config key '{where}'" if where else ""
    target = cfg[TARGET_KEY]
    name = target if isinstance(target, str) else (target_to_string(target) or repr(target))
    if isinstance(target, str):
        try:
            target = locate(target)
        except ImportError as err:
            raise ConfigTargetError(
                f"instantiate: cannot import _target_ {name!r}{where_text}: {err}. "
                "Fix the dotted path or make its package importable."
            ) from err
    if not callable(target):
        raise TypeError(
            f"instantiate: _target_{where_text} is {target!r}, which is not callable; "
            "LazyCall needs a class or function."
        )
    kwargs = {key: instantiate(cfg[key]) for key in cfg.keys() if key != TARGET_KEY}
    try:
        _check_arguments(target, kwargs, name, where_text)
        return target(**kwargs)
    except Exception as err:
        # Keep the original exception type (callers may catch it) but say which node failed.
        if hasattr(err, "add_note"):
            err.add_note(f"(raised while instantiating {name}{where_text})")
        raise


def _check_arguments(target: Any, kwargs: dict, name: str, where_text: str) -> None:
    """Raise `ConfigArgumentError` when `target` cannot take `kwargs` (a misspelt or a
    missing argument in the config), instead of a TypeError from inside the call.

    The signature is the callable's own (`follow_wrapped=False`): a decorated `__init__`
    (such as `@configurable`, which also takes `cfg`) shows `*args, **kwargs` and is not
    checked. Callables without a readable signature are not checked either.
    """
    try:
        signature = inspect.signature(target, follow_wrapped=False)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        accepted = [p.name for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise ConfigArgumentError(
            f"instantiate: {name}{where_text}: {err}; its arguments are {', '.join(accepted) or 'none'}. "
            "Fix the argument names in the config."
        ) from None
