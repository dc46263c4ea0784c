"""Learning-rate schedules with warmup, stepped once per training iteration.

Every scheduler here follows LiBai's ``libai.scheduler`` semantics, which wrap a OneFlow
schedule in OneFlow's ``WarmUpLR``:

* for ``step < warmup_iter`` the learning rate is ``base_lr * m(step)`` with
  ``m(step) = warmup_factor + (1 - warmup_factor) * step / warmup_iter`` ("linear") or
  ``m(step) = warmup_factor`` ("constant");
* from ``step >= warmup_iter`` on it is the wrapped schedule evaluated at the *global*
  step (the warmup does not shift the wrapped schedule; it only replaces its first
  ``warmup_iter`` values);
* ``warmup_iter == 0`` means no warmup at all.

That warm-up is one object, ``Warmup(factor, iters, method)``, which every scheduler here
builds from its ``warmup_factor``, ``warmup_iter`` and ``warmup_method`` arguments; each
class adds only its post-warm-up schedule (``_schedule_lr``). The arguments stay spelled
out in each constructor because LiBai's positional orders differ between the classes.

Each class computes its learning rate in closed form from ``last_epoch`` (the number of
``step()`` calls since construction), so the value at an iteration never depends on the
history of float round-off, and a resumed scheduler gives exactly the values an
uninterrupted one would.
"""

from __future__ import annotations

import bisect
import logging
import math
from numbers import Integral, Real
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

from libai.config import ConfigValueError

__all__ = [
    "Warmup",
    "WarmupCosineLR",
    "WarmupCosineAnnealingLR",
    "WarmupStepLR",
    "WarmupMultiStepLR",
    "WarmupExponentialLR",
    "WarmupPolynomialLR",
    "build_lr_scheduler",
]

logger = logging.getLogger(__name__)

_WARMUP_METHODS = ("linear", "constant")


def _check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an int, or raise one clear ConfigValueError (a ValueError) if it is
    not an int >= minimum."""
    # bool is an int subclass; True as an iteration count is always a config mistake.
    is_integral = isinstance(value, Integral) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        is_integral = True
    if not is_integral or value < minimum:
        raise ConfigValueError(
            f"{name} must be an integer >= {minimum}, got {value!r}; "
            "set it to a whole number of iterations"
        )
    return int(value)


def _check_number(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> float:
    """Return ``value`` as a float, or raise a ConfigValueError naming the allowed range."""
    ok = isinstance(value, Real) and not isinstance(value, bool)
    if ok and low is not None and value < low:
        ok = False
    if ok and high is not None and value > high:
        ok = False
    if not ok:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ConfigValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Warmup:
    """LiBai's warm-up (OneFlow's ``WarmUpLR``), shared by every scheduler here.

    For ``step < iters`` the learning rate is ``base_lr * multiplier(step)``; from ``iters``
    on the scheduler's own schedule takes over. ``iters == 0`` means no warm-up.

    Args:
        factor: the multiplier at step 0 (``warmup_factor``), >= 0.
        iters: the number of warm-up steps (``warmup_iter``), a whole number >= 0.
        method: "linear" (the multiplier rises from ``factor`` to 1 at ``iters``) or
            "constant" (it stays ``factor``) (``warmup_method``).
    """

    factor: float
    iters: int
    method: str = "linear"

    def __post_init__(self) -> None:
        # Errors name the scheduler arguments, which is what a user sets in a config.
        object.__setattr__(self, "iters", _check_int("warmup_iter", self.iters, 0))
        object.__setattr__(self, "factor", _check_number("warmup_factor", self.factor, 0.0))
        if self.method not in _WARMUP_METHODS:
            raise ConfigValueError(f"warmup_method must be one of {_WARMUP_METHODS}, got {self.method!r}")

    def covers(self, step: int) -> bool:
        """Whether ``step`` is still in the warm-up."""
        return step < self.iters

    def multiplier(self, step: int) -> float:
        """The multiplier of ``base_lr`` at ``step`` (a step the warm-up covers)."""
        if self.method == "constant":
            return self.factor
        alpha = step / self.iters
        return self.factor + (1.0 - self.factor) * alpha


class _WarmupScheduler(LRScheduler):
    """Base class: a ``Warmup`` followed by a closed-form schedule ``_schedule_lr``.

    Subclasses set their own hyperparameters, then call ``super().__init__`` and implement
    ``_schedule_lr(base_lr, step)``. A subclass whose schedule divides by ``max_iter`` names
    what ``max_iter`` is to it in ``_max_iter_is`` (then ``max_iter`` must be > 0).
    """

    _max_iter_is: ClassVar[Optional[str]] = None

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        warmup_factor: float,
        warmup_iter: int,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.max_iter = _check_int("max_iter", max_iter, 0)
        if self._max_iter_is is not None and self.max_iter == 0:
            raise ConfigValueError(f"max_iter must be > 0 for {type(self).__name__} (it is {self._max_iter_is})")
        self.warmup = Warmup(warmup_factor, warmup_iter, warmup_method)
        if self.warmup_iter > self.max_iter:
            # LiBai warns too: the wrapped schedule is never reached, which is rarely meant.
            logger.warning(
                "warmup_iter (%d) is larger than max_iter (%d): the whole run is warmup",
                self.warmup_iter,
                self.max_iter,
            )
        super().__init__(optimizer, last_epoch)

    # The scheduler arguments, as LiBai's schedulers expose them.
    @property
    def warmup_factor(self) -> float:
        """The warm-up's multiplier at step 0."""
        return self.warmup.factor

    @property
    def warmup_iter(self) -> int:
        """The number of warm-up steps."""
        return self.warmup.iters

    @property
    def warmup_method(self) -> str:
        """The warm-up method: "linear" or "constant"."""
        return self.warmup.method

    # ------------------------------------------------------------------ schedule
    def _schedule_lr(self, base_lr: Any, step: int) -> Any:
        """Learning rate of the wrapped (post-warmup) schedule at global ``step``."""
        raise NotImplementedError

    def lr_at(self, step: int, base_lr: Any) -> Any:
        """Closed-form learning rate for one parameter group at iteration ``step``."""
        if self.warmup.covers(step):
            return base_lr * self.warmup.multiplier(step)
        return self._schedule_lr(base_lr, step)

    def get_lr(self) -> list[Any]:
        """Learning rate of every param group at ``self.last_epoch`` (closed form)."""
        return [self.lr_at(self.last_epoch, base_lr) for base_lr in self.base_lrs]

    # torch's step(epoch) path looks for this name; the closed form serves both paths.
    _get_closed_form_lr = get_lr

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Progress of the schedule (iteration counter and base lrs), JSON-serializable.

        Hyperparameters (``max_iter``, ``alpha``, ...) are not stored: they come from the
        config when the scheduler is rebuilt, so a resumed run may e.g. extend ``max_iter``.
        """
        return {
            "last_epoch": int(self.last_epoch),
            "_step_count": int(self._step_count),
            "base_lrs": [float(lr) for lr in self.base_lrs],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore progress and write the matching learning rates into the optimizer.

        Writing the lrs makes resume independent of whether the optimizer state was
        loaded before or after this call (torch's own schedulers leave the optimizer
        untouched, so the first resumed iteration could otherwise run with a stale lr).
        """
        if "last_epoch" not in state_dict:
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: the state has no 'last_epoch' "
                f"(keys: {sorted(state_dict)}); pass a dict made by state_dict()"
            )
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        if "base_lrs" in state_dict:
            base_lrs = list(state_dict["base_lrs"])
            if len(base_lrs) != len(self.optimizer.param_groups):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: the state has {len(base_lrs)} "
                    f"base lrs but the optimizer has {len(self.optimizer.param_groups)} "
                    "param groups; build the optimizer from the same config as the checkpoint"
                )
            self.base_lrs = base_lrs
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(float(lr))
            else:
                group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class WarmupCosineLR(_WarmupScheduler):
    """Warmup, then cosine decay from ``base_lr`` to ``base_lr * alpha`` over ``max_iter``.

    After warmup (OneFlow ``CosineDecayLR`` with ``decay_steps = max_iter``)::

        lr(s) = base_lr * ((1 - alpha) * 0.5 * (1 + cos(pi * min(s, max_iter) / max_iter)) + alpha)

    Args:
        optimizer: wrapped optimizer.
        max_iter: total training iterations (the decay length).
        warmup_factor, warmup_iter, warmup_method: the ``Warmup`` (factor, iters, method).
        alpha: final lr as a fraction of ``base_lr``.
    """

    _max_iter_is = "the decay length"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        warmup_factor: float,
        warmup_iter: int,
        alpha: float = 0.0,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.alpha = _check_number("alpha", alpha, 0.0, 1.0)
        super().__init__(optimizer, max_iter, warmup_factor, warmup_iter, warmup_method, last_epoch)

    def _schedule_lr(self, base_lr: Any, step: int) -> Any:
        progress = min(step, self.max_iter) / self.max_iter
        cos_decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        return base_lr * ((1.0 - self.alpha) * cos_decay + self.alpha)


class WarmupCosineAnnealingLR(_WarmupScheduler):
    """Warmup, then cosine annealing from ``base_lr`` to ``eta_min`` (an absolute lr).

    After warmup (OneFlow / torch ``CosineAnnealingLR`` closed form, ``T_max = max_iter``)::

        lr(s) = eta_min + (base_lr - eta_min) * 0.5 * (1 + cos(pi * s / max_iter))

    Like the closed form it follows, the curve rises again past ``max_iter``.

    Args:
        optimizer: wrapped optimizer.
        max_iter: total training iterations (half a cosine period).
        warmup_factor, warmup_iter, warmup_method: the ``Warmup`` (factor, iters, method).
        eta_min: minimum learning rate.
    """

    _max_iter_is = "T_max"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        warmup_factor: float,
        warmup_iter: int,
        eta_min: float = 0.0,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.eta_min = _check_number("eta_min", eta_min, 0.0)
        super().__init__(optimizer, max_iter, warmup_factor, warmup_iter, warmup_method, last_epoch)

    def _schedule_lr(self, base_lr: Any, step: int) -> Any:
        cos_decay = 0.5 * (1.0 + math.cos(math.pi * step / self.max_iter))
        return self.eta_min + (base_lr - self.eta_min) * cos_decay


class WarmupStepLR(_WarmupScheduler):
    """Warmup, then multiply the lr by ``gamma`` every ``step_size`` iterations.

    After warmup: ``lr(s) = base_lr * gamma ** (s // step_size)``.

    Args:
        optimizer: wrapped optimizer.
        max_iter: total training iterations (checked against warmup only).
        step_size: decay period in iterations.
        gamma: multiplicative decay factor.
        warmup_factor, warmup_iter, warmup_method: the ``Warmup`` (factor, iters, method).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        step_size: int,
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iter: int = 0,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.step_size = _check_int("step_size", step_size, 1)
        self.gamma = _check_number("gamma", gamma, 0.0)
        super().__init__(optimizer, max_iter, warmup_factor, warmup_iter, warmup_method, last_epoch)

    def _schedule_lr(self, base_lr: Any, step: int) -> Any:
        return base_lr * self.gamma ** (step // self.step_size)


def _resolve_milestones(milestones: Sequence[Any], max_iter: int) -> list[int]:
    """Turn milestones into sorted iteration numbers.

    Values in [0, 1) that are not whole numbers are ratios of ``max_iter`` (LiBai writes
    ``milestones=[0.67, 0.89]`` in configs and scales them by the run length); whole
    numbers >= 1 are iterations. Mixing the two is ambiguous and rejected.
    """
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        try:
            milestones = list(milestones)  # ListConfig and other iterables
        except TypeError:
            raise ConfigValueError(f"milestones must be a list of numbers, got {milestones!r}") from None
    values = [_check_number("each milestone", m, 0.0) for m in milestones]
    is_ratio = [0.0 < v < 1.0 for v in values]
    is_iter = [v >= 1.0 for v in values]
    if any(is_ratio) and any(is_iter):
        raise ConfigValueError(
            f"milestones {list(milestones)} mix ratios in (0, 1) and iteration numbers; "
            "give all as ratios of max_iter (e.g. [0.5, 0.75]) or all as iterations"
        )
    if any(is_ratio):
        result = [int(v * max_iter) for v in values]
    else:
        for v in values:
            if not v.is_integer():
                raise ConfigValueError(
                    f"milestone {v!r} is neither a ratio in [0, 1) nor a whole iteration number"
                )
        result = [int(v) for v in values]
    if any(b < a for a, b in zip(result, result[1:])):
        raise ConfigValueError(f"milestones must be increasing, got {list(milestones)}")
    return result


class WarmupMultiStepLR(_WarmupScheduler):
    """Warmup, then multiply the lr by ``gamma`` at each milestone.

    After warmup: ``lr(s) = base_lr * gamma ** (number of milestones <= s)``.
    Milestones are iterations, or ratios in [0, 1) of ``max_iter`` (converted with
    ``int(ratio * max_iter)`` as LiBai does).

    Args:
        optimizer: wrapped optimizer.
        max_iter: total training iterations.
        milestones: increasing iterations or ratios of ``max_iter``.
        gamma: multiplicative decay factor.
        warmup_factor, warmup_iter, warmup_method: the ``Warmup`` (factor, iters, method).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        milestones: Sequence[float],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iter: int = 0,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.milestones = _resolve_milestones(milestones, _check_int("max_iter", max_iter, 0))
        self.gamma = _check_number("gamma", gamma, 0.0)
        super().__init__(optimizer, max_iter, warmup_factor, warmup_iter, warmup_method, last_epoch)

    def _schedule_lr(self, base_lr: Any, step: int) -> Any:
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)


class WarmupExponentialLR(_WarmupScheduler):
    """Warmup, then exponential decay: ``lr(s) = base_lr * gamma ** s`` after warmup.

    Args:
        optimizer: wrapped optimizer.
        max_iter: total training iterations (checked against warmup only).
        gamma: multiplicative decay factor per iteration.
        warmup_factor, warmup_iter, warmup_method: the ``Warmup`` (factor, iters, method).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iter: int = 0,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.gamma = _check_number("gamma", gamma, 0.0)
        super().__init__(optimizer, max_iter, warmup_factor, warmup_iter, warmup_method, last_epoch)

    def _schedule_lr(self, base_lr: Any, step: int) -> Any:
        return base_lr * self.gamma**step


class WarmupPolynomialLR(_WarmupScheduler):
    """Warmup, then polynomial decay from ``base_lr`` to ``end_learning_rate``.

    After warmup (OneFlow ``PolynomialLR`` with ``decay_batch = max_iter``)::

        cycle=False: s' = min(s, max_iter); D = max_iter
        cycle=True:  s' = s;                D = max_iter * max(1, ceil(s / max_iter))
        lr(s) = (base_lr - end_learning_rate) * (1 - s' / D) ** power + end_learning_rate

    With ``cycle=True`` the decay restarts every ``max_iter`` iterations from a lower peak.

    Args:
        optimizer: wrapped optimizer.
        max_iter: total training iterations (the decay length).
        warmup_factor, warmup_iter, warmup_method: the ``Warmup`` (factor, iters, method).
        end_learning_rate: final (absolute) learning rate.
        power: exponent of the polynomial.
        cycle: restart the decay every ``max_iter`` iterations.
    """

    _max_iter_is = "the decay length"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        warmup_factor: float,
        warmup_iter: int,
        end_learning_rate: float = 0.0001,
        power: float = 1.0,
        cycle: bool = False,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        self.end_learning_rate = _check_number("end_learning_rate", end_learning_rate, 0.0)
        self.power = _check_number("power", power, 0.0)
        self.cycle = bool(cycle)
        super().__init__(optimizer, max_iter, warmup_factor, warmup_iter, warmup_method, last_epoch)

    def _schedule_lr(self, base_lr: Any, step: int) -> Any:
        decay = self.max_iter
        if self.cycle:
            # Step 0 counts as inside the first cycle (TF polynomial_decay semantics).
            decay = self.max_iter * max(1, math.ceil(step / self.max_iter))
            cur = step
        else:
            cur = min(step, self.max_iter)
        factor = (1.0 - cur / decay) ** self.power
        return (base_lr - self.end_learning_rate) * factor + self.end_learning_rate


def build_lr_scheduler(cfg: Any, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """Build the scheduler described by a LazyCall config ``cfg`` for ``optimizer``.

    Sets ``cfg.optimizer = optimizer`` (as LiBai does) and instantiates ``cfg``; the
    trainer fills ``cfg.max_iter`` and ``cfg.warmup_iter`` before calling this.
    """
    from libai.optim.build import _set_object

    if "_target_" not in cfg:
        raise ConfigValueError(
            "build_lr_scheduler expects a LazyCall config with `_target_`, e.g. "
            "LazyCall(WarmupCosineLR)(warmup_factor=0.001, alpha=0.01); got keys "
            f"{sorted(cfg)}"
        )
    from libai.config import instantiate  # imported late: libai.config imports configs

    _set_object(cfg, "optimizer", optimizer)
    return instantiate(cfg)
