"""Lazy configs: `LazyCall` records a call, `LazyConfig` loads, overrides and saves configs.

A config is a Python file. Its top-level dicts (and OmegaConf containers) form the
config; `LazyCall(Cls)(**kwargs)` records `Cls(**kwargs)` as a `DictConfig` with a
`_target_` key, built later by `instantiate`. Config files import each other with relative
imports (`from .common.train import train`); every `LazyConfig.load` runs the files
afresh, so two loads never share objects.

Inside config files `train.update(...)` merges. While `LazyConfig.load` runs a config
file (and the files it imports, `get_config(...)` included), `DictConfig.update` (which,
from `MutableMapping`, replaces nested groups wholesale) is swapped for a merging version
in the loading thread, so that

    train.update(dict(dist=dict(tensor_parallel_size=2)))

changes one key of `train.dist` and keeps the other defaults, whether `train` came from
`from .common.train import train` or from `get_config("common/train.py").train`. The swap
is undone when the load returns: importing libai changes nothing in OmegaConf, and after a
load `DictConfig.update` is OmegaConf's own again. Outside config files, `merge_update(node,
dict(...))` merges the same way, explicitly.

The merging rules: a key that the group does not have is added with a `ConfigKeyWarning`
naming the nearest existing key (a typo would otherwise be silently ignored by the
trainer). Inside a LazyCall node (a recorded call, whose keyword arguments may have any
name) `update` sets each given argument as `dict.update` does, without warnings; a value
that is itself a LazyCall node always replaces the old value (its arguments belong to
another callable).
"""
from __future__ import annotations

import ast
import builtins
import difflib
import enum
import itertools
import keyword
import logging
import math
import os
import tempfile
import threading
import types
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import cloudpickle
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from .instantiate import TARGET_KEY, _node_path, is_lazy_node, locate, target_to_string

__all__ = [
    "LazyCall",
    "LazyConfig",
    "ConfigKeyError",
    "ConfigKeyWarning",
    "ConfigOverrideError",
    "ConfigValueError",
    "ConfigFileError",
    "ConfigImportError",
    "merge_update",
    "nearest_key",
]

logger = logging.getLogger(__name__)

_FLAGS = {"allow_objects": True}


# --------------------------------------------------------------------------------------
# Errors and key suggestions
# --------------------------------------------------------------------------------------


class ConfigKeyError(KeyError):
    """A config key that does not exist: a mistyped override or `keys=` of `LazyConfig.load`.

    The message names the key, the nearest existing key and the fix. `str(err)` is the
    plain message (a bare `KeyError` would wrap it in quotes).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigOverrideError(ValueError):
    """A command-line override that is not `key=value` (for example a flag placed after
    the overrides), or whose value has the wrong type for its key (`train.train_iter=abc`)."""


class ConfigValueError(ValueError):
    """A config value that cannot work: a wrong type or a size out of range.

    Raised where the value is read (`check_train_config`, the optimizer and scheduler
    builders); the message names the key, the value and what it must be.
    """


class ConfigFileError(ValueError):
    """A config file that cannot be loaded: Python that fails to run (syntax error, a name
    or import that does not exist, an exception raised by the file), YAML that does not
    parse, a pickle that is not a config, or an unknown file type.

    The message names the file and, for Python, the line: `str(err)` is one line.
    """


class ConfigImportError(ImportError, ConfigFileError):
    """An import in a config file that fails (still an `ImportError` for callers)."""


class ConfigKeyWarning(UserWarning):
    """`update()` added a key that the config group did not have (maybe a typo)."""


def nearest_key(key: str, candidates: Iterable[Any]) -> Optional[str]:
    """The candidate most similar to `key` (difflib ratio), or None when there are none."""
    names = [str(c) for c in candidates]
    if not names:
        return None
    matches = difflib.get_close_matches(str(key), names, n=1, cutoff=0.0)
    return matches[0] if matches else names[0]


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


# --------------------------------------------------------------------------------------
# Building config nodes
# --------------------------------------------------------------------------------------


def _untuple(obj: Any) -> Any:
    """Copy of plain dicts/lists/tuples with every tuple turned into a list.

    OmegaConf 2.4 keeps tuples as `TupleConfig`, which YAML cannot tell from a list: a saved
    config would load back unequal. Lists everywhere (what LiBai users got from older
    OmegaConf) make save -> load exact. Other objects are left alone.
    """
    if type(obj) is dict:
        return {key: _untuple(value) for key, value in obj.items()}
    if type(obj) in (list, tuple):
        return [_untuple(value) for value in obj]
    return obj


def _new_config(content: Mapping) -> DictConfig:
    """A DictConfig that may hold any Python object (classes, functions, modules, ...)."""
    return DictConfig(_untuple(dict(content)), flags=dict(_FLAGS))


def _storable_target(target: Any) -> Any:
    """`target`, or its import path where OmegaConf refuses to store it.

    OmegaConf rejects dict classes as values (it takes them for structured-config types),
    so `LazyCall(dict)` stores "builtins.dict"; `instantiate` imports it back.
    """
    try:
        DictConfig({TARGET_KEY: target}, flags=dict(_FLAGS))
        return target
    except Exception:
        path = target_to_string(target)
        if path is None:
            raise TypeError(
                f"LazyCall cannot store the target {target!r}; pass its dotted import path instead"
            ) from None
        return path


class LazyCall:
    """Record a call instead of making it: `LazyCall(Cls)(a=1)` is a config node.

    The node is a `DictConfig` `{"_target_": Cls, "a": 1}`; change it like any config
    (`node.a = 2`), then `instantiate(node)` calls `Cls(a=2)`. `target` is a callable or its
    dotted import path ("torch.nn.Linear").
    """

    def __init__(self, target: Union[Callable[..., Any], str]) -> None:
        if not (callable(target) or isinstance(target, str)):
            raise TypeError(
                f"LazyCall target must be a class, a function or a dotted import path string, "
                f"got {target!r} of type {type(target).__name__}"
            )
        self._target = target

    def __call__(self, **kwargs: Any) -> DictConfig:
        """Return the config node `{"_target_": target, **kwargs}`."""
        if TARGET_KEY in kwargs:
            raise TypeError(f"LazyCall(...) got a '{TARGET_KEY}' argument; the target is given to LazyCall itself")
        return _new_config({TARGET_KEY: _storable_target(self._target), **kwargs})

    def __repr__(self) -> str:
        return f"LazyCall({self._target!r})"


# --------------------------------------------------------------------------------------
# Merging DictConfig.update
# --------------------------------------------------------------------------------------


def _update_pairs(other: Any, kwargs: Mapping) -> list:
    """The (key, value) pairs of `update(other, **kwargs)`, as `dict.update` reads them."""
    if isinstance(other, Mapping):
        pairs = [(key, other[key]) for key in other.keys()]
    elif hasattr(other, "keys"):
        pairs = [(key, other[key]) for key in other.keys()]
    else:
        pairs = list(other)
    return pairs + list(kwargs.items())


def _is_group(node: Any) -> bool:
    """True if `node` is a DictConfig node that holds keys (not None, '???' or `${...}`)."""
    return (
        isinstance(node, DictConfig)
        and not node._is_none()
        and not node._is_missing()
        and not node._is_interpolation()
    )


def _merge_into(node: DictConfig, pairs: list, notes: list) -> None:
    """Merge `pairs` into `node` (the rules are in the module docstring)."""
    prefix = _node_path(node)
    lazy = is_lazy_node(node)
    existing = list(node.keys())
    for key, value in pairs:
        value = _untuple(value)
        if key not in existing:
            if not lazy and existing:
                near = nearest_key(str(key), existing)
                notes.append(
                    f"update(): '{_join(prefix, key)}' is not an existing config key, it was added anyway; "
                    f"the nearest existing key is '{_join(prefix, near)}'. Fix the spelling if that is a typo."
                )
            node[key] = value
            existing.append(key)
            continue
        child = node._get_node(key)
        if not lazy and _is_group(child) and isinstance(value, Mapping) and not is_lazy_node(value):
            _merge_into(child, _update_pairs(value, {}), notes)
        else:
            node[key] = value


def _merge_and_warn(node: DictConfig, other: Any, kwargs: Mapping, stacklevel: int) -> None:
    """Merge, then warn about added keys at `stacklevel` (counted from this function)."""
    notes: list = []
    _merge_into(node, _update_pairs(other, kwargs), notes)
    for note in notes:
        warnings.warn(note, ConfigKeyWarning, stacklevel=stacklevel + 1)


def merge_update(node: DictConfig, other: Any = (), /, **kwargs: Any) -> DictConfig:
    """`node.update(other, **kwargs)` that merges nested groups; returns `node`.

    What `train.update(dict(...))` does inside a config file, for code outside one:
    `merge_update(train, dict(dist=dict(tensor_parallel_size=2)))` changes one key of
    `train.dist` and keeps the others. The rules (warnings for added keys, LazyCall nodes)
    are in the module docstring.
    """
    if not isinstance(node, DictConfig):
        raise TypeError(f"merge_update() merges into a DictConfig, got {type(node).__name__}")
    _merge_and_warn(node, other, kwargs, stacklevel=2)
    return node


def _config_file_update(self: DictConfig, other: Any = (), /, **kwargs: Any) -> None:
    """`DictConfig.update` while configs load: merges in the loading thread only.

    Other threads keep OmegaConf's own `update` even during a load, so a config load in
    one thread never changes what OmegaConf code in another thread does.
    """
    if threading.get_ident() != _loading_thread:
        assert _original_update is not None
        _original_update(self, other, **kwargs)
        return
    _merge_and_warn(self, other, kwargs, stacklevel=2)


# --------------------------------------------------------------------------------------
# Running config files: relative imports between them, fresh objects per load
# --------------------------------------------------------------------------------------

_PKG_PREFIX = "_libai_config_"
_pkg_counter = itertools.count()
# `__package__` of a running config file -> (loader, its directory). Python hands the
# importer's globals to `__import__`, so this tells us which file is importing.
_active_packages: dict = {}
_import_lock = threading.RLock()
_patch_depth = 0
_original_import: Optional[Callable[..., Any]] = None
# What `_config_file_patches` swaps out, to put back: DictConfig's own `update` (from
# its class dict, where `_MISSING` means it is inherited from `MutableMapping`) and the
# function itself (for threads other than the loading one).
_MISSING = object()
_saved_update_attr: Any = _MISSING
_original_update: Optional[Callable[..., Any]] = None
_loading_thread: Optional[int] = None


class _ConfigFileLoader:
    """Runs the config files of one `LazyConfig.load` and resolves imports between them.

    Each file becomes a new module object (not put in `sys.modules`), so objects are fresh
    on every load; within one load a file imported twice runs once, as Python does.
    """

    def __init__(self) -> None:
        self.modules: dict = {}  # resolved Path -> module
        self.packages: list = []

    def close(self) -> None:
        """Forget this load's files in the import hook."""
        for package in self.packages:
            _active_packages.pop(package, None)

    def run_file(self, path: Path) -> types.ModuleType:
        """Run one config file (once per load) and return it as a module."""
        path = path.resolve()
        if path in self.modules:
            return self.modules[path]
        package = f"{_PKG_PREFIX}{next(_pkg_counter)}"
        _active_packages[package] = (self, path.parent)
        self.packages.append(package)
        module = types.ModuleType(f"{package}.{path.stem}")
        module.__file__ = str(path)
        module.__package__ = package
        # Registered before running, so an import cycle sees the partial module, like Python.
        self.modules[path] = module
        _run_config_code(path, module)
        _cast_module_dicts(module)
        return module

    def _dir_module(self, directory: Path) -> types.ModuleType:
        """A package-like module for a directory of config files."""
        directory = directory.resolve()
        if directory not in self.modules:
            module = types.ModuleType(f"{_PKG_PREFIX}dir.{directory.name}")
            module.__path__ = [str(directory)]  # type: ignore[attr-defined]
            self.modules[directory] = module
        return self.modules[directory]

    def _resolve(self, base: Path, parts: list, what: str, importer: str) -> tuple:
        """Walk `parts` from `base`: directories, then a file or directory at the end.

        Returns (first module, last module, directory of the last module or None).
        """
        first = last = None
        directory: Optional[Path] = base
        if not parts:
            first = last = self._dir_module(base)
            return first, last, base
        for i, part in enumerate(parts):
            assert directory is not None
            file, sub = directory / f"{part}.py", directory / part
            if file.is_file() and i == len(parts) - 1:
                module, directory = self.run_file(file), None
            elif sub.is_dir():
                module, directory = self._dir_module(sub), sub
            elif file.is_file():
                raise ModuleNotFoundError(
                    f"config {importer} imports {what!r}, but {file} is a file, not a folder of config files",
                    name=what,
                )
            else:
                raise ModuleNotFoundError(
                    f"config {importer} imports {what!r}, but neither {file} nor the folder {sub} exists; "
                    "fix the import path (relative imports are resolved from the importing file's folder)",
                    name=what,
                )
            if last is not None:
                setattr(last, part, module)
            first = first or module
            last = module
        return first, last, directory

    def import_from(self, base: Path, name: str, fromlist: Sequence, what: str, importer: str, top: bool) -> Any:
        """`__import__` for config files under `base`; `top` returns the first module."""
        parts = name.split(".") if name else []
        first, last, directory = self._resolve(base, parts, what, importer)
        if directory is not None:
            # `from .common import train`: names of a folder may be files or sub-folders.
            for item in fromlist or ():
                if item == "*" or hasattr(last, item):
                    continue
                if (directory / f"{item}.py").is_file():
                    setattr(last, item, self.run_file(directory / f"{item}.py"))
                elif (directory / item).is_dir():
                    setattr(last, item, self._dir_module(directory / item))
        return first if top else last


# Mistakes a config file's author makes, reported as one line wherever they are raised: a
# name that is not defined, an import that fails (also inside a module the file imports),
# a syntax error (also in an imported project module). Other exceptions keep their type
# and traceback: raised inside library code they may be bugs, and one that the file
# raises on purpose is for its callers to catch.
_CONFIG_MISTAKES = (SyntaxError, ImportError, NameError)


def _run_config_code(path: Path, module: types.ModuleType) -> None:
    """Compile and run one config file in `module`; its mistakes become `ConfigFileError`s."""
    try:
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
    except SyntaxError as err:
        raise ConfigFileError(f"config file '{path}', line {err.lineno}: {_syntax_text(err, path)}") from err
    try:
        exec(code, module.__dict__)
    except ConfigFileError:
        raise  # from a config file this one imports, which it already names
    except _CONFIG_MISTAKES as err:
        what = _syntax_text(err, path) if isinstance(err, SyntaxError) else f"{type(err).__name__}: {err}"
        message = f"config file '{path}', line {_line_in_file(err, path)}: {what}"
        if isinstance(err, ImportError):
            raise ConfigImportError(message, name=err.name) from err
        raise ConfigFileError(message) from err


def _syntax_text(err: SyntaxError, path: Path) -> str:
    """`SyntaxError: <msg>`, the file and line when it is not `path`, and the code."""
    where = f" ({err.filename}, line {err.lineno})" if err.filename and err.filename != str(path) else ""
    code = f": {err.text.strip()}" if err.text and err.text.strip() else ""
    return f"{type(err).__name__}: {err.msg}{where}{code}"


def _line_in_file(err: BaseException, path: Path) -> Optional[int]:
    """The line of `path` that was running when `err` was raised (the deepest one)."""
    line = None
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _cast_module_dicts(module: types.ModuleType) -> None:
    """Turn a config module's top-level dicts into DictConfigs.

    So that `from .train import train` gives a config node (attribute access, merging
    `update`), exactly what `LazyConfig.load(...).train` gives.
    """
    for name, value in list(vars(module).items()):
        if not name.startswith("__") and isinstance(value, dict):
            setattr(module, name, _new_config(value))


def _config_import(name: str, globals: Any = None, locals: Any = None, fromlist: Sequence = (), level: int = 0) -> Any:
    """`builtins.__import__` while configs load: resolves imports made by config files."""
    package = globals.get("__package__") if isinstance(globals, Mapping) else None
    entry = _active_packages.get(package) if isinstance(package, str) else None
    if entry is not None:
        loader, directory = entry
        importer = globals.get("__file__", "?")
        if level > 0:
            base = directory
            for _ in range(level - 1):
                base = base.parent
            return loader.import_from(base, name, fromlist, "." * level + name, importer, top=False)
        if name == "configs" or name.startswith("configs."):
            # LiBai's project configs write `from configs.common.train import train`.
            root = _packaged_root_with(name.split(".")[1:])
            if root is not None:
                inner = ".".join(name.split(".")[1:])
                return loader.import_from(root, inner, fromlist, name, importer, top=not fromlist)
    assert _original_import is not None
    return _original_import(name, globals, locals, fromlist, level)


def _packaged_root_with(parts: list) -> Optional[Path]:
    """The packaged configs folder holding `parts` (a file or folder), if any."""
    from .config import packaged_config_dirs  # config.py imports this module

    for root in packaged_config_dirs():
        target = root.joinpath(*parts) if parts else root
        if target.is_dir() or target.with_suffix(".py").is_file():
            return root
    return None


@contextmanager
def _config_file_patches() -> Iterator[None]:
    """While config files run: their imports go through `_config_import` and
    `DictConfig.update` merges (in this thread). Re-entrant; both are restored on exit.

    The lock is held for the whole load, so one thread loads at a time and a load started
    from a config file (`get_config`, `LazyConfig.load_rel`) nests in the same patches.
    """
    global _patch_depth
    with _import_lock:
        if _patch_depth == 0:
            _install_patches()
        _patch_depth += 1
        try:
            yield
        finally:
            _patch_depth -= 1
            if _patch_depth == 0:
                _remove_patches()


def _install_patches() -> None:
    """Swap in the config-file `__import__` and `update` (outermost load only)."""
    global _original_import, _original_update, _saved_update_attr, _loading_thread
    _original_import = builtins.__import__
    _saved_update_attr = DictConfig.__dict__.get("update", _MISSING)
    _original_update = DictConfig.update
    _loading_thread = threading.get_ident()
    builtins.__import__ = _config_import
    DictConfig.update = _config_file_update  # type: ignore[method-assign,assignment]


def _remove_patches() -> None:
    """Put back exactly what `_install_patches` found."""
    global _loading_thread
    builtins.__import__ = _original_import
    if _saved_update_attr is _MISSING:
        del DictConfig.update  # inherited again from MutableMapping
    else:
        DictConfig.update = _saved_update_attr  # type: ignore[method-assign]
    _loading_thread = None


# --------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------

_WORD_VALUES = {"true": True, "false": False, "null": None, "none": None}


def parse_override_value(text: str) -> Any:
    """Read an override value: a Python literal if it is one, else the string itself.

    `5` -> 5, `1e-4` -> 0.0001, `[1,2]` -> [1, 2], `None` -> None, `'s'` -> "s",
    `hello` -> "hello". YAML/shell spellings `true`, `false`, `null`, `none` (any case) are
    read as True/False/None, because the string "false" would count as true; quote them
    (`x='false'`) to get the string.
    """
    stripped = text.strip()
    try:
        return _untuple(ast.literal_eval(stripped))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if stripped.lower() in _WORD_VALUES:
        return _WORD_VALUES[stripped.lower()]
    return stripped


def _check_key_exists(cfg: DictConfig, key: str, override: str) -> None:
    """Raise ConfigKeyError unless every part of the dotted `key` exists in `cfg`."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        parent = ".".join(parts[:i])
        if isinstance(node, DictConfig) and _is_group(node):
            names = list(node.keys())
            if part in names:
                node = node._get_node(part)
                if isinstance(node, DictConfig) and node._is_interpolation():
                    node = OmegaConf.select(cfg, path, throw_on_missing=False)
                continue
            near = nearest_key(part, names)
            hint = f"the nearest existing key is '{_join(parent, near)}'" if near else f"'{parent}' has no keys"
        elif isinstance(node, ListConfig) and not node._is_none() and not node._is_missing():
            if part.isdigit() and int(part) < len(node):
                node = node._get_node(int(part))
                continue
            hint = f"'{parent}' is a list of {len(node)} items (indices 0..{len(node) - 1})"
        else:
            value = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
            hint = f"'{parent}' holds a value ({type(value).__name__}), not a group of keys"
        raise ConfigKeyError(
            f"config override {override!r}: key '{path}' does not exist; {hint}. "
            f"Fix the spelling, or write '+{key}=...' to add a new key."
        )


def _expected_kind(old: Any, new: Any) -> Optional[str]:
    """What a key holding `old` takes, when `new` is not that; None when `new` fits.

    Only numbers and booleans are checked: their keys never take a string or a list (a
    string key may become a list, e.g. a data_prefix, and None means "unset" anywhere).
    """
    if old is None or new is None or (isinstance(new, str) and new.startswith("${")):
        return None
    if isinstance(old, bool):
        return None if isinstance(new, bool) else "true or false"
    if isinstance(old, (int, float)) and (isinstance(new, bool) or not isinstance(new, (int, float))):
        return "a number"
    return None


def _check_value_type(cfg: DictConfig, key: str, value: Any, override: str) -> None:
    """Raise `ConfigOverrideError` when `value` has the wrong type for what `key` holds
    (`train.train_iter=abc` would otherwise fail far away, after the run has started)."""
    try:
        old = OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # an interpolation that does not resolve: nothing to compare with
        return
    expected = _expected_kind(old, value)
    if expected is not None:
        got = f"the string {value!r}" if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
        raise ConfigOverrideError(
            f"config override {override!r}: {key} takes {expected} (it is {old!r}), got {got}: "
            f"fix the value, e.g. {key}={old!r}"
        )


def _apply_one_override(cfg: DictConfig, override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key.lstrip("+"):
        hint = " (flags such as --resume go before the overrides)" if override.startswith("-") else ""
        raise ConfigOverrideError(
            f"config override {override!r} is not of the form key=value, e.g. train.train_iter=100{hint}"
        )
    add = key.startswith("+")
    key = key.lstrip("+")
    if not add:
        _check_key_exists(cfg, key, override)
    value = parse_override_value(text)
    if not add:
        _check_value_type(cfg, key, value, override)
    # merge=False: "train.dist={'tensor_parallel_size': 2}" sets exactly that dict.
    OmegaConf.update(cfg, key, value, merge=False, force_add=add)


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------

_YAML_SCALARS = (str, int, float, bool, type(None))


class _Unserializable(Exception):
    """A value YAML cannot hold, with its dotted key."""

    def __init__(self, key: str, value: Any) -> None:
        super().__init__(key)
        self.key = key
        self.value = value


def _to_yaml_data(obj: Any, key: str = "") -> Any:
    """Plain YAML data for a config container; `_target_` callables become import paths."""
    if isinstance(obj, dict):
        out = {}
        for name, value in obj.items():
            if type(name) not in (str, int, float, bool):
                raise _Unserializable(_join(key, name), name)
            if name == TARGET_KEY and not isinstance(value, str):
                path = target_to_string(value)
                if path is None:
                    raise _Unserializable(_join(key, name), value)
                out[name] = path
            else:
                out[name] = _to_yaml_data(value, _join(key, name))
        return out
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return [_to_yaml_data(value, f"{key}[{i}]") for i, value in enumerate(obj)]
    if type(obj) in _YAML_SCALARS:
        return obj
    if isinstance(obj, enum.Enum) and target_to_string(type(obj)) is not None:
        # e.g. InterpolationMode.BICUBIC in LiBai's vision configs; `load` turns it back.
        return {TARGET_KEY: target_to_string(type(obj)), _ENUM_VALUE_KEY: _to_yaml_data(obj.value, key)}
    raise _Unserializable(key, obj)


# The one other key of a saved enum member's node ({_target_: EnumClass, value: ...}).
_ENUM_VALUE_KEY = "value"


def _saved_enum_member(node: Any) -> Optional[enum.Enum]:
    """The enum member a node written by `_to_yaml_data` stands for, or None."""
    if not (isinstance(node, DictConfig) and _is_group(node) and set(node.keys()) == {TARGET_KEY, _ENUM_VALUE_KEY}):
        return None
    try:
        cls = locate(node[TARGET_KEY]) if isinstance(node[TARGET_KEY], str) else node[TARGET_KEY]
    except Exception:
        return None
    if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
        return None
    return cls(node[_ENUM_VALUE_KEY])


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _resolve_targets(node: Any) -> None:
    """After reading YAML: `_target_` import paths back to objects where importable.

    So that save -> load gives a config equal to the saved one. A path that does not
    import here stays a string (`instantiate` tries again and reports the error).
    """
    if isinstance(node, DictConfig) and _is_group(node):
        for key in list(node.keys()):
            child = node._get_node(key)
            member = _saved_enum_member(child)
            if member is not None:
                node[key] = member
            elif key == TARGET_KEY and not child._is_interpolation():
                value = node[key]
                if isinstance(value, str):
                    try:
                        node[key] = locate(value)
                    except Exception:
                        pass
            else:
                _resolve_targets(child)
    elif isinstance(node, ListConfig) and not node._is_none() and not node._is_missing():
        for i in range(len(node)):
            member = _saved_enum_member(node._get_node(i))
            if member is not None:
                node[i] = member
            else:
                _resolve_targets(node._get_node(i))


# --------------------------------------------------------------------------------------
# Python source
# --------------------------------------------------------------------------------------

_LINE_WIDTH = 100


class _PySource:
    """Formats config values as Python source and collects the imports they need."""

    def __init__(self) -> None:
        self.imports: set = set()
        self.uses_lazycall = False

    def name_of(self, obj: Any) -> Optional[str]:
        """`module.attr` source text for an importable object (adds the import)."""
        path = target_to_string(obj)
        if path is None:
            return None
        module, _, _ = path.rpartition(".")
        # The import path's module part: the longest prefix that is a module.
        while module and not _is_module(module):
            module = module.rpartition(".")[0]
        if module:
            self.imports.add(module)
        return path

    def fmt(self, obj: Any, indent: int = 0) -> str:
        """Source text of `obj`, on one line if it fits, else one item per line."""
        items, opener, closer = self._items(obj, indent)
        if items is None:
            return opener
        one_line = opener + ", ".join(items) + closer
        if indent + len(one_line) <= _LINE_WIDTH and "\n" not in one_line:
            return one_line
        pad = " " * (indent + 4)
        items, _, _ = self._items(obj, indent + 4)
        body = "".join(f"{pad}{item},\n" for item in items)
        return f"{opener}\n{body}{' ' * indent}{closer}"

    def _items(self, obj: Any, indent: int) -> tuple:
        """(item texts, opener, closer), or (None, whole text, '') for a scalar."""
        if isinstance(obj, dict) and TARGET_KEY in obj:
            self.uses_lazycall = True
            target = obj[TARGET_KEY]
            target_text = repr(target) if isinstance(target, str) else (self.name_of(target) or repr(target))
            args = {k: v for k, v in obj.items() if k != TARGET_KEY}
            return self._kwargs(args, indent), f"LazyCall({target_text})(", ")"
        if isinstance(obj, dict):
            if all(_is_identifier(k) for k in obj):
                return self._kwargs(obj, indent), "dict(", ")"
            return [f"{k!r}: {self.fmt(v, indent)}" for k, v in obj.items()], "{", "}"
        if isinstance(obj, list):
            return [self.fmt(v, indent) for v in obj], "[", "]"
        if isinstance(obj, tuple):
            texts = [self.fmt(v, indent) for v in obj]
            return (texts, "(", ",)") if len(texts) == 1 else (texts, "(", ")")
        return None, self._scalar(obj), ""

    def _kwargs(self, args: dict, indent: int) -> list:
        texts = []
        for key, value in args.items():
            if _is_identifier(key):
                texts.append(f"{key}={self.fmt(value, indent)}")
            else:
                texts.append(f"**{{{key!r}: {self.fmt(value, indent)}}}")
        return texts

    def _scalar(self, obj: Any) -> str:
        if isinstance(obj, float) and not math.isfinite(obj):
            return f"float({str(obj)!r})"
        if type(obj) in _YAML_SCALARS:
            return repr(obj)
        if callable(obj) or isinstance(obj, types.ModuleType):
            name = obj.__name__ if isinstance(obj, types.ModuleType) else self.name_of(obj)
            if name:
                if isinstance(obj, types.ModuleType):
                    self.imports.add(name)
                return name
        return repr(obj)  # not valid Python in general; to_py says so


def _is_identifier(key: Any) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------------------
# LazyConfig
# --------------------------------------------------------------------------------------


class LazyConfig:
    """Load, override, save and print configs (all static methods)."""

    @staticmethod
    def load(filename: Union[str, os.PathLike], keys: Union[None, str, Sequence[str]] = None) -> Any:
        """Load a config file: `.py` (run it), `.yaml`/`.yml`, or `.pkl` (from `save`).

        A `.py` config's top-level dicts, DictConfigs and ListConfigs whose names do not
        start with "_" form the config. Relative imports between config files work
        (`from .common.train import train`), as do LiBai's `from configs.common... import`
        (resolved against the packaged configs). Every call runs the files afresh.

        Args:
            filename: the config file.
            keys: None for the whole config, a key name for one value, or a list of names
                for a tuple of values.
        """
        path = Path(filename)
        if path.is_dir():
            raise ConfigFileError(f"config file {str(filename)!r} is a folder: give the config file in it (--config-file)")
        if not path.is_file():
            raise FileNotFoundError(
                f"config file {str(filename)!r} does not exist (current directory: {os.getcwd()}); "
                "check the path given with --config-file"
            )
        suffix = path.suffix.lower()
        if suffix == ".py":
            cfg = _load_python(path)
        elif suffix in (".yaml", ".yml"):
            cfg = _load_yaml(path)
        elif suffix == ".pkl":
            cfg = _load_pickle(path)
        else:
            raise ConfigFileError(f"config file {str(filename)!r}: use a .py, .yaml/.yml or .pkl file")
        if keys is None:
            return cfg
        if isinstance(keys, str):
            return _select_key(cfg, keys, path)
        return tuple(_select_key(cfg, key, path) for key in keys)

    @staticmethod
    def load_rel(filename: str, keys: Union[None, str, Sequence[str]] = None) -> Any:
        """`load` with `filename` relative to the folder of the calling config file."""
        import inspect

        caller = inspect.stack()[1].frame.f_globals.get("__file__")
        if not caller:
            raise ValueError("LazyConfig.load_rel() must be called from a file (it resolves paths from it)")
        return LazyConfig.load(Path(caller).parent / filename, keys)

    @staticmethod
    def save(cfg: DictConfig, filename: Union[str, os.PathLike]) -> str:
        """Write `cfg` as YAML to `filename`; `load` reads it back to an equal config.

        `_target_` callables are written as import paths. If the config holds a value YAML
        cannot hold (an object, a lambda, a class defined in a function or in `__main__`),
        the config is pickled with cloudpickle to `filename + ".pkl"` instead, and a warning
        names the value. The file is written whole or not at all.

        Returns:
            The path written (`filename`, or `filename + ".pkl"`).
        """
        path = Path(filename)
        container = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
        try:
            data = _to_yaml_data(container)
            if isinstance(data, dict) and "model" in data:
                # A whole config: an empty `defaults` list tells `load` not to merge it onto
                # the packaged configs, as it does a hand-written run config.
                data = {"defaults": [], **data}
            text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True)
        except (_Unserializable, yaml.YAMLError) as err:
            pkl = Path(f"{path}.pkl")
            _atomic_write(pkl, cloudpickle.dumps(cfg))
            what = f"'{err.key}' = {err.value!r}" if isinstance(err, _Unserializable) else str(err)
            logger.warning(
                "Config value %s cannot be written as YAML; saved the config with cloudpickle to %s "
                "instead of %s (load it with LazyConfig.load(%r)).",
                what,
                pkl,
                path,
                str(pkl),
            )
            return str(pkl)
        _atomic_write(path, text.encode("utf-8"))
        return str(path)

    @staticmethod
    def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
        """Apply command-line overrides like `train.train_iter=100` and return `cfg`.

        Values are Python literals (`5`, `1e-4`, `[1, 2]`, `None`, `'text'`), else strings;
        `true`/`false`/`null` also work (see `parse_override_value`). A key that does not
        exist raises `ConfigKeyError` naming the nearest existing key; `+key=value` adds a
        new key on purpose.
        """
        if isinstance(overrides, str):
            raise TypeError("apply_overrides() takes a list of 'key=value' strings, not one string")
        for override in overrides:
            _apply_one_override(cfg, override)
        return cfg

    @staticmethod
    def to_py(cfg: DictConfig, prefix: str = "cfg.") -> str:
        """Python source that rebuilds `cfg`, one assignment per top-level key.

        With `prefix=""` the text is a config file that `LazyConfig.load` reads back to an
        equal config (if every value is a literal, an importable callable or a LazyCall
        node; other objects are written with `repr`). With `prefix="cfg."` the lines assign
        to an existing `cfg` object (for logs and reading).
        """
        container = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else dict(cfg)
        source = _PySource()
        body = []
        for key, value in container.items():
            if _is_identifier(key):
                lhs = f"{prefix}{key}"
            else:
                lhs = f"{prefix.rstrip('.') or 'globals()'}[{key!r}]"
            body.append(f"{lhs} = {source.fmt(value, 0)}")
        header = []
        if source.uses_lazycall:
            header.append("from libai.config import LazyCall")
        header.extend(f"import {module}" for module in sorted(source.imports))
        return "\n".join(header + ([""] if header else []) + body) + "\n"


def _load_python(path: Path) -> DictConfig:
    loader = _ConfigFileLoader()
    with _config_file_patches():
        try:
            module = loader.run_file(path)
        finally:
            loader.close()
    content = {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, (DictConfig, ListConfig, dict))
    }
    return _new_config(content)


def _load_yaml(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        raise ConfigFileError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(err)}") from err
    if not isinstance(loaded, DictConfig):
        raise ConfigFileError(
            f"config file {str(path)!r} holds a YAML {type(loaded).__name__}; a config must be a mapping"
        )
    loaded = _with_packaged_defaults(loaded, path)
    cfg = DictConfig(loaded, flags=dict(_FLAGS))
    _resolve_targets(cfg)
    return cfg


# What a run's YAML config starts from when it names no `defaults:` (Hydra's word for the
# configs a file is merged onto): the same packaged configs a Python config loads.
_RUN_DEFAULTS = ("common/train.py", "common/optim.py", "common/models/graph.py")


def _with_packaged_defaults(loaded: DictConfig, path: Path) -> DictConfig:
    """A hand-written run config in YAML, merged onto LiBai's packaged configs.

    A file with a `defaults:` list (packaged config paths such as `common/train.py`; the
    `.py` may be left out) starts from those; a file with a `model` section and no list
    starts from `_RUN_DEFAULTS`, so the sections and keys it leaves out take LiBai's
    defaults. The file's own values win. A file with no `model`, or an empty list (what
    `LazyConfig.save` writes: a saved config is whole), is unchanged.
    """
    from .config import get_config  # config.py imports this module

    if "defaults" in loaded:
        names = loaded.pop("defaults")
        if not isinstance(names, ListConfig) or not all(isinstance(n, str) for n in names):
            raise ConfigFileError(
                f"config file {str(path)!r}: `defaults` must be a list of packaged config paths, "
                f"e.g. [common/train.py, common/optim.py]"
            )
    elif "model" in loaded:
        names = _RUN_DEFAULTS
    else:
        return loaded
    bases = []
    for name in names:
        try:
            bases.append(get_config(name if name.endswith((".py", ".yaml", ".yml")) else f"{name}.py"))
        except FileNotFoundError as err:
            raise ConfigFileError(f"config file {str(path)!r}: defaults entry {name!r}: {err}") from None
    return OmegaConf.merge(*bases, loaded)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's several-line report as one line: where (1-based) and what."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def _load_pickle(path: Path) -> DictConfig:
    try:
        with open(path, "rb") as f:
            cfg = cloudpickle.load(f)
    except Exception as err:  # garbage can fail to unpickle in many ways; each means the same
        raise ConfigFileError(
            f"config file {str(path)!r} cannot be unpickled ({type(err).__name__}: {err}): "
            "a .pkl config must be one written by LazyConfig.save"
        ) from err
    if not isinstance(cfg, DictConfig):
        raise ConfigFileError(f"{str(path)!r} does not hold a pickled config (found {type(cfg).__name__})")
    return cfg


def _select_key(cfg: DictConfig, key: str, path: Path) -> Any:
    if key in cfg.keys():
        return cfg[key]
    near = nearest_key(key, cfg.keys())
    raise ConfigKeyError(
        f"config file {str(path)!r} has no top-level key {key!r}"
        + (f"; the nearest is {near!r}" if near else "")
        + ". Fix the key name."
    )
