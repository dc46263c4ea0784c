"""Turn a model config (`cfg = dict(...)` in configs/common/models/*.py) into `__init__` arguments."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping


def init_kwargs_from_config(init: Callable, cfg: Mapping, owner: str) -> dict[str, Any]:
    """The keyword arguments of `init` read from `cfg` by name, for a `from_config` classmethod.

    A parameter missing from `cfg` takes its default, so configs written for LiBai (which may
    lack newer switches) still build. Keys of `cfg` that `init` does not take (e.g. a head's
    `num_labels` read by the wrapping model) are ignored. A missing required parameter is a
    one-line error naming it.
    """
    init = inspect.unwrap(init)
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(init).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in cfg:
            kwargs[name] = cfg[name]
        elif param.default is inspect.Parameter.empty:
            raise ValueError(f"{owner} config has no {name!r}: add it to the model's cfg dict")
    return kwargs
