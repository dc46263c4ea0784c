"""Checks of a training config before a run starts: the groups the trainer builds and the
values of `train` (types and ranges), each failure one `ConfigValueError` naming the key.

    check_train_config(cfg)      # after LazyConfig.apply_overrides, before anything runs

A wrong value found here costs nothing; found where it is used, it would fail after the
run has set up its output directory, or in the middle of training (a `log_period` of 0
divides by zero at the first step). The rules follow `configs/common/train.py`; a key a
config does not have is not checked (the trainer has a default for it).
"""
from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable
from collections.abc import Sequence

from omegaconf import OmegaConf

from libai.utils.events import WANDB_MISSING, WANDB_MODES

from .lazy import ConfigKeyWarning, ConfigValueError, nearest_key

__all__ = ["check_train_config", "TRAINER_GROUPS"]

# Top-level groups the trainer builds from, and how a config defines each.
TRAINER_GROUPS = {
    "train": "train = get_config('common/train.py').train",
    "model": "model = LazyCall(SomeModel)(...)",
    "optim": "optim = get_config('common/optim.py').optim",
    "dataloader": "dataloader.train = LazyCall(build_nlp_train_loader)(dataset=[...])",
}


@dataclass(frozen=True)
class _Rule:
    """What one `train` key must hold: `ok(value)`, said in words as `expected`."""

    expected: str
    ok: Callable[[Any], bool]
    optional: bool = False  # None is accepted (derived or unused)


def _is_int(value: Any) -> bool:
    # bool is an int subclass; True as a size is always a mistake. A float (1e4) would
    # reach range() and modulo arithmetic in the trainer, which need ints.
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(low: int, optional: bool = False) -> _Rule:
    return _Rule(f"an integer >= {low}", lambda v: _is_int(v) and v >= low, optional)


def _number_in(low: float, high: float = float("inf")) -> _Rule:
    words = f"a number in [{low}, {high}]" if high != float("inf") else f"a number >= {low}"
    return _Rule(words, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high)


def _one_of(choices: Sequence[Any], optional: bool = False) -> _Rule:
    return _Rule(f"one of {', '.join(repr(c) for c in choices)}", lambda v: v in choices and type(v) is not bool, optional)


_BOOL = _Rule("true or false", lambda v: isinstance(v, bool))
_TEXT = _Rule("a string", lambda v: isinstance(v, str), optional=True)

# Keys of `train` (see configs/common/train.py for what each one means).
_TRAIN_RULES: dict[str, _Rule] = {
    "output_dir": _TEXT,
    "load_weight": _TEXT,
    "train_micro_batch_size": _int_at_least(1, optional=True),
    "global_batch_size": _int_at_least(1, optional=True),
    "num_accumulation_steps": _int_at_least(1, optional=True),
    "test_micro_batch_size": _int_at_least(1),
    "train_iter": _int_at_least(0),
    "train_epoch": _number_in(0),
    "warmup_ratio": _number_in(0, 1),
    "log_period": _int_at_least(1),
    "gc_freeze": _BOOL,
    "seed": _int_at_least(0),
    "checkpointer.period": _int_at_least(1),
    "checkpointer.max_to_keep": _int_at_least(1, optional=True),
    "checkpointer.save_model_after_n_epoch": _int_at_least(1, optional=True),
    "checkpointer.save_top_k": _int_at_least(0),
    "evaluation.enabled": _BOOL,
    "evaluation.eval_period": _int_at_least(0),
    "evaluation.eval_after_n_epoch": _int_at_least(1, optional=True),
    "evaluation.eval_iter": _int_at_least(1),
    "evaluation.eval_mode": _one_of(("min", "max")),
    "overfit_batches": _int_at_least(0),
    "early_stopping.enabled": _BOOL,
    "early_stopping.patience": _int_at_least(1),
    "early_stopping.min_delta": _number_in(0),
    "wandb.enabled": _BOOL,
    "wandb.mode": _one_of(WANDB_MODES),
    "wandb.project": _TEXT,
    "wandb.name": _TEXT,
    "wandb.tags": _Rule("a list of strings", lambda v: isinstance(v, Sequence) and not isinstance(v, str) and all(isinstance(t, str) for t in v)),
    "amp.enabled": _BOOL,
    "amp.dtype": _one_of(("float16", "fp16", "bfloat16", "bf16"), optional=True),
    "activation_checkpoint.enabled": _BOOL,
    "zero_optimization.enabled": _BOOL,
    "zero_optimization.stage": _one_of((1, 2, 3)),
    "dist.data_parallel_size": _int_at_least(1, optional=True),
    "dist.tensor_parallel_size": _int_at_least(1, optional=True),
    "dist.pipeline_parallel_size": _int_at_least(1, optional=True),
    "dist.pipeline_num_layers": _int_at_least(1, optional=True),
    "dist.exact_reduction": _BOOL,
    "nccl_fusion_threshold_mb": _number_in(0.0),
    "nccl_fusion_max_ops": _int_at_least(1),
    "pipeline.schedule": _one_of(("GPipe", "1F1B", "Interleaved1F1B")),
    "device": _one_of(("auto", "cuda", "cpu"), optional=True),
}

_ABSENT = object()


def check_train_config(cfg: Any, groups: Sequence[str] = tuple(TRAINER_GROUPS)) -> None:
    """Raise `ConfigValueError` for the first problem that would stop a training run.

    Checks that `cfg` has the top-level `groups` (and `dataloader.train`), then every key of
    `_TRAIN_RULES` that `cfg.train` holds. Run it after the overrides are applied and before
    the run sets anything up, so a bad value leaves no trace.
    """
    _check_groups(cfg, groups)
    if "train" not in groups and "train" not in cfg:
        return
    for key, rule in _TRAIN_RULES.items():
        _check_value(cfg.train, key, rule)
    _check_optional_packages(cfg.train)
    _warn_unread_train_keys(cfg.train)


# Keys the trainer adds to `train` while it runs (kept in config.yaml, read on resume).
_DERIVED_TRAIN_KEYS = frozenset({"resume", "samples", "warmup_iter"})


def _default_train_keys() -> dict[str, list[str]]:
    """{top-level key: its dotted leaf keys} of configs/common/train.py's `train`."""
    global _DEFAULT_TRAIN_KEYS
    if _DEFAULT_TRAIN_KEYS is None:
        from .config import get_config  # late: config imports this module

        train = get_config("common/train.py").train
        _DEFAULT_TRAIN_KEYS = {
            key: [f"{key}.{leaf}" for leaf in value] if isinstance(value, Mapping) else [key]
            for key, value in train.items()
        }
    return _DEFAULT_TRAIN_KEYS


_DEFAULT_TRAIN_KEYS = None


def _warn_unread_train_keys(train: Any) -> None:
    """Warn about a top-level `train` key that nothing here reads, naming the nearest one.

    LiBai's configs can set such keys without effect (its `swin_imagenet.py` sets
    `train.eval_period`, where `train.evaluation.eval_period` is meant); a project that reads
    a key of its own may ignore the warning.
    """
    known = _default_train_keys()
    for key in train:
        if key in known or key in _DERIVED_TRAIN_KEYS:
            continue
        candidates = [dotted for leaves in known.values() for dotted in leaves]
        same_leaf = [dotted for dotted in candidates if dotted.rsplit(".", 1)[-1] == key]
        near = same_leaf[0] if same_leaf else nearest_key(key, candidates)
        warnings.warn(
            f"train.{key} is not a key of the train config (configs/common/train.py) and the trainer does not read it; "
            f"the nearest is train.{near}. Fix the name, or ignore this if your own code reads it.",
            ConfigKeyWarning,
            stacklevel=2,
        )


def _check_groups(cfg: Any, groups: Sequence[str]) -> None:
    """Each group is there and is a mapping (a config group or a LazyCall node)."""
    for name in groups:
        value = cfg.get(name) if isinstance(cfg, Mapping) else None
        if not isinstance(value, Mapping):
            what = "has no" if value is None else f"has a {type(value).__name__} as"
            raise ConfigValueError(
                f"the config {what} '{name}', which the trainer builds from: define it in the config file, "
                f"e.g. {TRAINER_GROUPS.get(name, name + ' = ...')}"
            )
    if "dataloader" in groups and not isinstance(cfg.dataloader.get("train"), Mapping):
        raise ConfigValueError(
            f"the config has no 'dataloader.train' (the training data): define it, e.g. {TRAINER_GROUPS['dataloader']}"
        )


def _check_optional_packages(train: Any) -> None:
    """A feature the config turns on has its optional package installed."""
    if OmegaConf.select(train, "wandb.enabled", default=False) is True and importlib.util.find_spec("wandb") is None:
        raise ConfigValueError(f"train.wandb.enabled=True, but {WANDB_MISSING}; or set train.wandb.enabled=False")


def _check_value(train: Any, key: str, rule: _Rule) -> None:
    """Raise `ConfigValueError` when `train.<key>` is there and breaks `rule`."""
    try:
        value = OmegaConf.select(train, key, default=_ABSENT, throw_on_missing=True)
    except Exception:  # '???' or an interpolation that does not resolve
        raise ConfigValueError(f"train.{key} is not set (or does not resolve): give it {rule.expected}") from None
    if value is _ABSENT or (value is None and rule.optional) or rule.ok(value):
        return
    shown = f"the string {value!r}" if isinstance(value, str) else repr(value)
    raise ConfigValueError(
        f"train.{key} must be {rule.expected}, got {shown}: fix it in the config file or on the "
        f"command line (train.{key}=...)"
    )
