"""Optimizer construction: LiBai's ``build_optimizer`` and ``get_default_optimizer_params``.

``get_default_optimizer_params`` turns a model into torch param groups with per-parameter
hyperparameters (no weight decay on biases and normalization weights, per-name
overrides, gradient-clipping settings) and merges parameters whose hyperparameters are
equal, so that the optimizer sees as few groups as possible (multi-tensor kernels are
much faster over few large groups than over many one-tensor groups).

Gradient clipping is not an optimizer feature in torch: the values are kept as extra
keys ``clip_grad_max_norm`` / ``clip_grad_norm_type`` in each param group (torch keeps
unknown group keys and saves them in the optimizer state), and the trainer reads them
from ``optimizer.param_groups``.
"""

from __future__ import annotations

import difflib
import numbers
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "get_default_optimizer_params", "reduce_param_groups"]

# A module counts as a normalization layer when its class, or a base class, is named like
# LayerNorm, RMSNorm, GroupNorm, BatchNorm2d, InstanceNorm1d, SyncBatchNorm, ... This also
# covers libai.layers.LayerNorm and project-specific norms without importing them here.
_NORM_CLASS_NAME = re.compile(r"Norm(\d+d)?$")


def is_norm_module(module: nn.Module) -> bool:
    """True if ``module`` is a normalization layer (its parameters get ``weight_decay_norm``)."""
    return any(_NORM_CLASS_NAME.search(cls.__name__) for cls in type(module).__mro__)


def _to_plain(value: Any) -> Any:
    """Convert OmegaConf containers (from a LazyCall config) to plain dicts/lists."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a hyperparameter value (lists such as betas become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    return value


def _check_overrides(overrides: Any) -> dict[str, dict[str, Any]]:
    """Validate ``overrides`` ({param name: {hyperparameter: value}}) and copy it."""
    overrides = _to_plain(overrides)
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(
            "overrides must be a dict like {'pos_embed': {'weight_decay': 0.0}}, "
            f"got {type(overrides).__name__}"
        )
    result = {}
    for name, hyper in overrides.items():
        if not isinstance(hyper, Mapping):
            raise TypeError(
                f"overrides[{name!r}] must be a dict of hyperparameters such as "
                f"{{'weight_decay': 0.0}}, got {hyper!r}"
            )
        if "params" in hyper:
            raise ValueError(f"overrides[{name!r}] may not set 'params'; it sets hyperparameters")
        result[str(name)] = dict(hyper)
    return result


def _default_hyperparams(
    base_lr: float | None,
    weight_decay: float | None,
    clip_grad_max_norm: float | None,
    clip_grad_norm_type: float | None,
) -> dict[str, Any]:
    """Hyperparameters every group gets (only those given: the rest come from the optimizer)."""
    defaults: dict[str, Any] = {}
    if base_lr is not None:
        defaults["lr"] = base_lr
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay
    if clip_grad_max_norm is not None:
        if clip_grad_max_norm <= 0:
            raise ValueError(
                f"clip_grad_max_norm must be > 0, got {clip_grad_max_norm}; "
                "use None to disable gradient clipping"
            )
        defaults["clip_grad_max_norm"] = clip_grad_max_norm
        # LiBai drops clipping silently when only the norm is given; defaulting the norm
        # type to 2 (the L2 norm, torch's default) keeps clipping on as the user asked.
        norm_type = 2.0 if clip_grad_norm_type is None else clip_grad_norm_type
        defaults["clip_grad_norm_type"] = norm_type
    return defaults


def get_default_optimizer_params(
    model: nn.Module | None = None,
    base_lr: float | None = None,
    weight_decay: float | None = None,
    weight_decay_norm: float | None = None,
    weight_decay_bias: float | None = None,
    clip_grad_max_norm: float | None = None,
    clip_grad_norm_type: float | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Param groups for a torch optimizer, with LiBai's per-parameter rules.

    Args:
        model: the model whose trainable parameters are grouped (``build_optimizer``
            fills it in).
        base_lr: lr for every group; None keeps the optimizer's ``lr``.
        weight_decay: weight decay for every group; None keeps the optimizer's.
        weight_decay_norm: weight decay for parameters of normalization layers
            (LayerNorm, BatchNorm, GroupNorm, RMSNorm, ... any ``*Norm`` module).
        weight_decay_bias: weight decay for parameters named ``bias``.
        clip_grad_max_norm: max gradient norm, stored in each group for the trainer.
        clip_grad_norm_type: norm type for clipping (2.0 when a max norm is given alone).
        overrides: ``{name: {hyperparameter: value}}`` for parameters whose own name
            (e.g. ``"pos_embed"``, ``"bias"``) or full dotted name
            (e.g. ``"head.weight"``) is ``name``; a full-name entry wins over a short one.

    Returns:
        A list of ``{"params": [...], **hyperparameters}`` dicts; every trainable parameter
        appears exactly once, and parameters with equal hyperparameters share one group.
    """
    if model is None:
        raise ValueError(
            "get_default_optimizer_params needs the model; build_optimizer(cfg, model) "
            "sets cfg.params.model for you, or pass model=... directly"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    overrides = _check_overrides(overrides)
    user_override_names = set(overrides)
    defaults = _default_hyperparams(base_lr, weight_decay, clip_grad_max_norm, clip_grad_norm_type)
    if weight_decay_bias is not None:
        if "bias" in overrides:
            raise ValueError(
                "Conflicting settings for 'bias': both weight_decay_bias and "
                "overrides['bias'] are given; keep only one of them"
            )
        overrides["bias"] = {"weight_decay": weight_decay_bias}

    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    used_names: set[str] = set()
    for module_name, module in model.named_modules():
        norm = is_norm_module(module)
        for param_name, param in module.named_parameters(recurse=False):
            # A parameter shared by several modules is optimized once, with the
            # hyperparameters of the first module that owns it (module order).
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            hyper = dict(defaults)
            if norm and weight_decay_norm is not None:
                hyper["weight_decay"] = weight_decay_norm
            for key in (param_name, full_name):
                if key in overrides:
                    hyper.update(overrides[key])
                    used_names.add(key)
            groups.append({"params": [param], **hyper})

    _warn_unused_overrides(user_override_names - used_names, model)
    return reduce_param_groups(groups)


def _warn_unused_overrides(unused: set[str], model: nn.Module) -> None:
    """Warn about override names that match no trainable parameter (usually a typo)."""
    if not unused:
        return
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    short = sorted({n.rsplit(".", 1)[-1] for n in names})
    for name in sorted(unused):
        close = difflib.get_close_matches(name, short + names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warnings.warn(
            f"get_default_optimizer_params: override {name!r} matches no trainable "
            f"parameter and is ignored{hint}",
            stacklevel=3,
        )


def decay_and_no_decay_groups(
    model: nn.Module | None = None,
    skip_list: Sequence[str] | str = (),
    skip_keywords: Sequence[str] | str = (),
) -> list[dict[str, Any]]:
    """Two param groups by Swin V2's rule: no weight decay on 1-D parameters (norms,
    biases), parameters named ``*.bias``, parameters whose full name is in `skip_list`, and
    parameters whose full name contains one of `skip_keywords`; the optimizer's weight decay
    on the rest.

    LiBai's Swin V2 configs define this rule inline (``set_weight_decay``); here it is one
    function, e.g. ``LazyCall(decay_and_no_decay_groups)(skip_keywords=("logit_scale",))``
    (``build_optimizer`` fills in `model`). A single string is one name, not its letters.
    """
    if model is None:
        raise ValueError("decay_and_no_decay_groups needs the model; build_optimizer(cfg, model) sets it for you")
    skip_list = (skip_list,) if isinstance(skip_list, str) else tuple(skip_list)
    skip_keywords = (skip_keywords,) if isinstance(skip_keywords, str) else tuple(skip_keywords)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skipped = (
            param.dim() == 1
            or name.endswith(".bias")
            or name in skip_list
            or any(keyword in name for keyword in skip_keywords)
        )
        (no_decay if skipped else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def reduce_param_groups(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge param groups with equal hyperparameters (first-seen order kept).

    A parameter listed in several groups keeps the hyperparameters of its last listing.
    """
    per_param: dict[int, dict[str, Any]] = {}
    for item in params:
        if "params" not in item:
            raise ValueError(f"each param group needs a 'params' key, got keys {sorted(item)}")
        hyper = {k: v for k, v in item.items() if k != "params"}
        for param in item["params"]:
            entry = per_param.setdefault(id(param), {"param": param, "hyper": {}})
            entry["hyper"].update(hyper)

    merged: dict[tuple, dict[str, Any]] = {}
    for entry in per_param.values():
        hyper = entry["hyper"]
        key = tuple((k, _freeze(v)) for k, v in sorted(hyper.items()))
        group = merged.setdefault(key, {**hyper, "params": []})
        group["params"].append(entry["param"])
    return list(merged.values())


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """Instantiate the optimizer described by the LazyCall config ``cfg`` for ``model``.

    ``cfg.params`` is normally ``LazyCall(get_default_optimizer_params)(...)``; its
    ``model`` is set to ``model`` before instantiation (as in LiBai). When ``cfg`` has no
    ``params``, all of ``model.parameters()`` are optimized in one group.
    """
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ValueError(
            "build_optimizer expects a LazyCall config with `_target_`, e.g. "
            "LazyCall(torch.optim.AdamW)(params=LazyCall(get_default_optimizer_params)(), "
            "lr=1e-4); see configs/common/optim.py"
        )
    from libai.config import instantiate  # imported late: libai.config imports configs

    _check_hyperparameters(cfg)
    params = cfg.get("params", None)
    if params is None:
        # Same result as model.parameters() (one group of all trainable parameters), but
        # expressed as a config node so that the config stays instantiable.
        _set_object(cfg, "params", {"_target_": f"{__name__}.get_default_optimizer_params"})
        params = cfg["params"]
    if isinstance(params, Mapping) and "_target_" in params:
        _set_object(params, "model", model)
    optimizer = instantiate(cfg)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"build_optimizer: cfg._target_ built a {type(optimizer).__name__}, "
            "not a torch.optim.Optimizer"
        )
    return optimizer


# Hyperparameters of torch's optimizers that are numbers >= 0 wherever they appear. torch
# checks them too, but from inside the optimizer's constructor, as a traceback.
_NON_NEGATIVE = ("lr", "weight_decay", "eps", "momentum", "dampening", "alpha")


def _is_number(value: Any) -> bool:
    # A tensor lr is allowed by torch (capturable schedules); bool is never meant.
    return isinstance(value, torch.Tensor) or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _check_hyperparameters(cfg: Mapping) -> None:
    """Raise `ConfigValueError` naming `optim.<key>` for a hyperparameter torch would refuse."""
    from libai.config import ConfigValueError

    for key in _NON_NEGATIVE:
        value = cfg.get(key)  # None: not given, the optimizer's default applies
        if value is not None and not _non_negative(value):
            raise ConfigValueError(f"optim.{key} must be a number >= 0, got {value!r}: fix it in the config (optim.{key}=...)")
    betas = cfg.get("betas")
    if betas is not None and not _valid_betas(betas):
        raise ConfigValueError(f"optim.betas must be two numbers in [0, 1), got {betas!r}: e.g. optim.betas=[0.9, 0.999]")


def _non_negative(value: Any) -> bool:
    return _is_number(value) and (isinstance(value, torch.Tensor) or value >= 0)


def _valid_betas(betas: Any) -> bool:
    """Two numbers in [0, 1) (a list, tuple or ListConfig; a string is a sequence too, but not one)."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        return False
    return all(_is_number(b) and 0 <= b < 1 for b in betas)


def _set_object(cfg: Any, key: str, value: Any) -> None:
    """Store an arbitrary Python object (e.g. a model) in a config node, in place."""
    from omegaconf import DictConfig, flag_override

    if isinstance(cfg, DictConfig):
        # A DictConfig only holds plain values unless "allow_objects" is set; LazyCall
        # configs normally have it, but a hand-made DictConfig may not.
        with flag_override(cfg, "allow_objects", True):
            cfg[key] = value
    else:
        cfg[key] = value
