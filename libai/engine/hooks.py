"""Hooks the trainer calls around training and around each iteration.

Per iteration the trainer sets `storage.iter = trainer.iter`, calls `before_step` of
every hook, runs the step, then calls `after_step` of every hook; so inside a hook
`trainer.iter == trainer.storage.iter` is the iteration that is running or just ran. Every hook's
per-iteration work is a few integer comparisons except on its own periods: the trainer
must stay as fast as a hand-written loop.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Mapping, Optional

from libai.utils import distributed as dist
from libai.utils.events import EventWriter
from libai.utils.rng import preserved_rng_states

__all__ = [
    "HookBase",
    "CallbackHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "EvalHook",
    "BestCheckpointer",
    "EarlyStopping",
    "TopKCheckpointer",
    "PeriodicWriter",
    "PreemptionCheckpointer",
    "TrainingPreempted",
    "flatten_results_dict",
]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of trainer hooks.

    The trainer sets `hook.trainer` when it registers the hook, then calls `before_train`,
    per iteration `before_step` / `after_step`, and `after_train` (also after a failure).
    A hook reads `trainer.iter`, `trainer.start_iter`, `trainer.max_iter`,
    `trainer.storage`, `trainer.model`, `trainer.optimizer`, `trainer.lr_scheduler`,
    `trainer.checkpointer`, `trainer.cfg`, `trainer.global_batch_size` and
    `trainer.consumed_train_samples`.

    A hook whose decisions depend on the past (a best value, a counter) returns it from
    `state_dict` (JSON-able values) and takes it back in `load_state_dict`; the trainer's
    own `state_dict` gathers them, so a resumed run continues where it stopped.

    The trainer reads the step's losses to the host only when some hook's `reads_metrics()`
    is true for the iteration (a device sync on a GPU, so not every step): a hook that reads
    the storage's losses, or saves or evaluates the model (which must not follow a
    non-finite loss, checked on that read), says so there. The read is a collective (the
    data-parallel mean), so every rank must have the same hooks giving the same answers: a
    hook that acts on rank 0 only is registered everywhere and does nothing elsewhere (as
    `PeriodicWriter` with no writers).
    """

    trainer: Any = None

    def reads_metrics(self) -> bool:
        """Whether this iteration's `after_step` needs the losses of the steps so far in
        the storage (checked finite). Default: no."""
        return False

    def state_dict(self) -> dict:
        """What this hook must remember across a resume (empty: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back what `state_dict` returned."""

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration, or after training stopped with an error."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_step(self) -> None:
        """Called after each iteration."""


def _is_last_iter(trainer) -> bool:
    return trainer.iter == trainer.max_iter - 1


def _is_eval_iter(trainer, period: int) -> bool:
    """Whether the iteration that just ran is one `EvalHook(period, ...)` evaluates after:
    every `period` iterations (0: never) and the last one. The hooks that judge an
    evaluation (best, top-k, early stopping) act on the same iterations."""
    return (period > 0 and (trainer.iter + 1) % period == 0) or _is_last_iter(trainer)


def _check_mode(owner: str, mode: str) -> None:
    if mode not in ("max", "min"):
        raise ValueError(
            f"{owner} mode must be 'max' or 'min', got {mode!r}: set "
            "train.evaluation.eval_mode to 'max' (accuracy) or 'min' (loss)."
        )


def _training_finished(trainer) -> bool:
    # `TrainerBase.train` steps `iter` to max_iter after the loop; an exception (also one
    # raised by the last step, e.g. a non-finite loss) leaves it below.
    return trainer.iter >= trainer.max_iter


def _check_period(name: str, value: Any, allow_zero: bool = False) -> int:
    """Validate a hook period (an int >= 1, or >= 0 where 0 means 'only at the end')."""
    low = 0 if allow_zero else 1
    if isinstance(value, float) and value.is_integer():  # e.g. 1e3 written in a config
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        hint = "an int >= 0 (0 = only at the end of training)" if allow_zero else "an int >= 1"
        raise ValueError(f"{name} must be {hint}, got {value!r}: fix it in the config.")
    return value


class CallbackHook(HookBase):
    """A hook made of plain functions, each taking the trainer as its only argument."""

    def __init__(
        self,
        *,
        before_train: Optional[Callable] = None,
        after_train: Optional[Callable] = None,
        before_step: Optional[Callable] = None,
        after_step: Optional[Callable] = None,
    ) -> None:
        self._before_train = before_train
        self._after_train = after_train
        self._before_step = before_step
        self._after_step = after_step

    def before_train(self) -> None:
        """Call the `before_train` callback."""
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self) -> None:
        """Call the `after_train` callback, then drop all callbacks."""
        if self._after_train:
            self._after_train(self.trainer)
        # Callbacks are often closures over the trainer: drop them to break the cycle.
        self._before_train = self._after_train = None
        self._before_step = self._after_step = None

    def before_step(self) -> None:
        """Call the `before_step` callback."""
        if self._before_step:
            self._before_step(self.trainer)

    def reads_metrics(self) -> bool:
        """An `after_step` callback may read the storage: it sees every step's losses."""
        return self._after_step is not None

    def after_step(self) -> None:
        """Call the `after_step` callback."""
        if self._after_step:
            self._after_step(self.trainer)


class IterationTimer(HookBase):
    """Put each iteration's duration as `time` into the storage and log totals at the end.

    Put it first in the hook list: it measures from its `before_step` to its
    `after_step`, i.e. the step itself plus the other hooks' `before_step`. The first
    `warmup_iter - 1` iterations (compilation, cache warm-up) are not recorded.
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_start = 0.0
        self._iters_done = 0
        self._timed_iters = 0
        self._timed_seconds = 0.0

    def before_train(self) -> None:
        """Start the wall clock for the whole run."""
        self._train_start = time.perf_counter()
        self._iters_done = 0
        self._timed_iters = 0
        self._timed_seconds = 0.0

    def before_step(self) -> None:
        """Start this iteration's clock."""
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        """Put this iteration's duration as `time` once past warm-up."""
        seconds = time.perf_counter() - self._step_start
        self._iters_done += 1
        if self._iters_done >= self._warmup_iter:
            self._timed_iters += 1
            self._timed_seconds += seconds
            self.trainer.storage.put_scalar("time", seconds)

    def after_train(self) -> None:
        """Log the speed over the timed iterations and the total time (hooks included)."""
        total = time.perf_counter() - self._train_start
        if self._timed_iters > 0:
            logger.info(
                "Overall training speed: %d iterations in %s (%.4f s / it)",
                self._timed_iters,
                datetime.timedelta(seconds=int(self._timed_seconds)),
                self._timed_seconds / self._timed_iters,
            )
        logger.info(
            "Total training time: %s (%s on hooks)",
            datetime.timedelta(seconds=int(total)),
            datetime.timedelta(seconds=int(max(0.0, total - self._timed_seconds))),
        )


class LRScheduler(HookBase):
    """Put the learning rate used by the iteration as `lr`, then step the scheduler.

    `optimizer` / `scheduler` default to `trainer.optimizer` / `trainer.lr_scheduler`.
    The logged lr is the one of the param group with the most parameters (with one
    parameter per group: the most common lr), since groups may differ (e.g. no decay).
    """

    def __init__(self, optimizer=None, scheduler=None) -> None:
        self._optimizer = optimizer
        self._scheduler = scheduler
        self._group_id = 0

    def before_train(self) -> None:
        """Resolve optimizer and scheduler from the trainer; pick the group to log."""
        self._optimizer = self._optimizer or self.trainer.optimizer
        self._scheduler = self._scheduler or getattr(self.trainer, "lr_scheduler", None)
        self._group_id = self.get_best_param_group_id(self._optimizer)

    @staticmethod
    def get_best_param_group_id(optimizer) -> int:
        """Index of the param group whose lr represents the run."""
        groups = optimizer.param_groups
        largest = max(len(g["params"]) for g in groups)
        if largest == 1:
            lr = Counter(g["lr"] for g in groups).most_common(1)[0][0]
            return next(i for i, g in enumerate(groups) if g["lr"] == lr)
        return next(i for i, g in enumerate(groups) if len(g["params"]) == largest)

    @property
    def scheduler(self):
        """The scheduler this hook steps."""
        return self._scheduler

    def after_step(self) -> None:
        """Record this iteration's lr, then advance the schedule by one iteration."""
        lr = self._optimizer.param_groups[self._group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        if self._scheduler is not None:
            self._scheduler.step()


_CKPT_NAME = re.compile(r"^(?P<prefix>.+)_(?P<iter>\d{7})$")


def _checkpoint_extra(trainer) -> Dict[str, Any]:
    """Training progress saved with each checkpoint, for an exact resume: the last
    finished iteration and the samples consumed up to it."""
    # In after_train the trainer's iter may already be past the last step (max_iter, or
    # more after resuming a finished run): the weights are those of iteration max_iter - 1.
    iteration = min(int(trainer.iter), int(trainer.max_iter) - 1)
    extra: Dict[str, Any] = {"iteration": iteration}
    if iteration == trainer.iter:
        consumed = getattr(trainer, "consumed_train_samples", None)
    else:
        gbs = getattr(trainer, "global_batch_size", None)
        consumed = None if gbs is None else (iteration + 1) * gbs
    if consumed is not None:
        extra["consumed_train_samples"] = int(consumed)
    return extra


class PeriodicCheckpointer(HookBase):
    """Save `{file_prefix}_{iter:07d}` when `(iter + 1) % period == 0` and
    `{file_prefix}_final` after the last iteration, through `checkpointer.save(name, **extra)`
    with `extra = {iteration, consumed_train_samples}`.

    With `max_to_keep`, only the newest `max_to_keep` periodic checkpoints in
    `checkpointer.save_dir` stay (older ones, also from a previous run, are deleted; the
    final and best checkpoints are never deleted). `max_iter` defaults to the trainer's.
    """

    def __init__(
        self,
        checkpointer,
        period: int,
        max_to_keep: Optional[int] = None,
        max_iter: Optional[int] = None,
        file_prefix: str = "model",
    ) -> None:
        self.checkpointer = checkpointer
        self.period = _check_period("checkpointer.period", period)
        if max_to_keep is not None:
            _check_period("checkpointer.max_to_keep", max_to_keep)
        self.max_to_keep = max_to_keep
        self.max_iter = max_iter
        self.file_prefix = file_prefix

    def before_train(self) -> None:
        """Take `max_iter` from the trainer when it was not given."""
        if self.max_iter is None:
            self.max_iter = self.trainer.max_iter

    def _saves_now(self) -> tuple[bool, bool]:
        """(periodic, final): whether this iteration saves, and why."""
        iteration = self.trainer.iter
        return (iteration + 1) % self.period == 0, iteration >= self.max_iter - 1

    def reads_metrics(self) -> bool:
        """A saving iteration: what is saved must follow finite losses."""
        return any(self._saves_now())

    def after_step(self) -> None:
        """Save on the period and at the last iteration."""
        iteration = self.trainer.iter
        periodic, final = self._saves_now()
        if not (periodic or final):
            return
        extra = _checkpoint_extra(self.trainer)
        if periodic:
            self.checkpointer.save(f"{self.file_prefix}_{iteration:07d}", **extra)
            if self.max_to_keep is not None and dist.is_main_process():
                self._delete_old_checkpoints()
        if final:
            self.checkpointer.save(f"{self.file_prefix}_final", **extra)

    def _periodic_checkpoints(self) -> List[str]:
        """Names of this prefix's periodic checkpoint dirs in save_dir, oldest first."""
        save_dir = self.checkpointer.save_dir
        if not save_dir or not os.path.isdir(save_dir):  # saving disabled: nothing to prune
            return []
        found = []
        for name in os.listdir(save_dir):
            match = _CKPT_NAME.match(name)
            if match and match["prefix"] == self.file_prefix:
                if os.path.isdir(os.path.join(save_dir, name)):
                    found.append((int(match["iter"]), name))
        return [name for _, name in sorted(found)]

    def _delete_old_checkpoints(self) -> None:
        # Only the main process deletes (the checkpoint dirs are shared by all ranks).
        names = self._periodic_checkpoints()
        for name in names[: max(0, len(names) - self.max_to_keep)]:
            _remove_dir_atomically(os.path.join(self.checkpointer.save_dir, name))


def _remove_dir_atomically(path: str) -> None:
    """Delete a checkpoint dir so that no half-deleted dir keeps a checkpoint's name:
    rename it to a hidden name first (atomic), then remove the renamed tree."""
    parent, name = os.path.split(path)
    trash = os.path.join(parent, f".{name}.deleting.{os.getpid()}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
    logger.info("Deleted old checkpoint %s", path)


class TrainingPreempted(BaseException):
    """Training stopped on a preemption signal after saving a checkpoint.

    A `BaseException`, like `KeyboardInterrupt`: it is an interruption, not a failure, so
    the loop does not log it as an error. `exit_code` is the shell's 128 + signal number.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class PreemptionCheckpointer(HookBase):
    """On SIGTERM or SIGUSR1 (what SLURM and Kubernetes send before they kill a job), every
    rank finishes the step it is in, one checkpoint `{file_prefix}_{iter:07d}` is written
    (unless the periodic one of that iteration already was) and `TrainingPreempted` ends
    the run; `--resume` continues from that checkpoint.

    The signal handler only records the signal. After each step the ranks agree on it (a
    one-integer all-reduce on the CPU, over gloo, so no device sync), because the signal
    reaches the processes at different moments and all of them must save the same step.
    Handlers are installed in `before_train` (main thread only) and restored in
    `after_train`.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, checkpointer, file_prefix: str = "model") -> None:
        self.checkpointer = checkpointer
        self.file_prefix = file_prefix
        self._received: Optional[int] = None
        self._previous: Dict[int, Any] = {}
        self._group = None

    def _record(self, signum: int, frame: Any) -> None:
        self._received = signum

    def before_train(self) -> None:
        """Install the signal handlers and the group the ranks agree over."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        self._group = dist.new_cpu_group()

    def after_step(self) -> None:
        """Save and stop when any rank received a signal."""
        signum = dist.all_reduce_max_int(self._received or 0, self._group)
        if not signum:
            return
        # Every rank got the same signum, so every rank reads (a collective) before saving.
        self.trainer.read_metrics()
        name = f"{self.file_prefix}_{self.trainer.iter:07d}"
        path = os.path.join(self.checkpointer.save_dir, name)
        if os.path.normpath(self.checkpointer.get_checkpoint_file()) != os.path.normpath(path):
            path = self.checkpointer.save(name, **_checkpoint_extra(self.trainer))
        raise TrainingPreempted(
            f"preempted by {signal.Signals(signum).name} after iteration {self.trainer.iter}: saved {path}; "
            f"run the same command with --resume to continue",
            signum,
        )

    def after_train(self) -> None:
        """Put the previous signal handlers back."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def flatten_results_dict(results: Mapping, prefix: str = "") -> Dict[str, Any]:
    """Flatten nested dicts: `{"a": {"b": 1}}` -> `{"a/b": 1}`."""
    flat: Dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_results_dict(value, prefix=f"{name}/"))
        else:
            flat[name] = value
    return flat


class EvalHook(HookBase):
    """Run `eval_function()` when `(iter + 1) % eval_period == 0` and after the last
    iteration, and put its results (a possibly nested dict of numbers, flattened with
    "/") into the storage with `smoothing_hint=False`. `eval_period=0`: only at the end.

    Every rank must run this hook (evaluation is collective).
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], Optional[Mapping]]) -> None:
        self._period = _check_period("evaluation.eval_period", eval_period, allow_zero=True)
        self._func = eval_function
        self._last_eval_iter: Optional[int] = None

    def _do_eval(self) -> None:
        # Evaluation must not advance the generators training draws from: a run resumed
        # from a checkpoint written just before it would otherwise draw other numbers.
        with preserved_rng_states():
            results = self._func()
        if results:
            if not isinstance(results, Mapping):
                raise TypeError(
                    f"The eval function must return a dict of metrics, got "
                    f"{type(results).__name__}: return e.g. {{'Acc@1': 97.5}}."
                )
            scalars = {}
            for name, value in flatten_results_dict(results).items():
                try:
                    scalars[name] = float(value)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"The eval function returned a non-number for '{name}': {value!r}; "
                        "return a (nested) dict of floats."
                    ) from None
            self.trainer.storage.put_scalars(smoothing_hint=False, **scalars)
        self._last_eval_iter = self.trainer.iter
        # Ranks may finish evaluation at different times; start the next step together.
        dist.synchronize()

    def reads_metrics(self) -> bool:
        """An evaluation iteration: the model must follow finite losses."""
        return _is_eval_iter(self.trainer, self._period)

    def after_step(self) -> None:
        """Evaluate on the period and after the last iteration."""
        if _is_eval_iter(self.trainer, self._period):
            self._do_eval()

    def after_train(self) -> None:
        """Evaluate once more if training completed without reaching a last-step eval
        (e.g. a run resumed at max_iter); skip after a failure."""
        if self._func is None:
            return
        if _training_finished(self.trainer) and self._last_eval_iter != self.trainer.max_iter - 1:
            self._do_eval()
        # The eval function is usually a closure over the trainer: break the cycle.
        self._func = None


def latest_metric(storage, name: str) -> Optional[tuple]:
    """(value, iteration) of the latest `name` in `storage`; results of a named test set
    are flattened to "<set>/<metric>", so a unique "<set>/name" counts too. None if absent."""
    latest = storage.latest()
    if name in latest:
        return latest[name]
    matches = [k for k in latest if k.endswith("/" + name)]
    return latest[matches[0]] if len(matches) == 1 else None


def _improvement(value: float, best: Optional[float], mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in `mode` ("max"/"min");
    NaN and inf never do."""
    if math.isnan(value) or math.isinf(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class BestCheckpointer(HookBase):
    """Save `file_prefix` (default `model_best`) whenever `val_metric` improves.

    Place it after the `EvalHook` whose `eval_period` it shares: it checks at the same
    iterations, reading the latest value of `val_metric` from the storage. `mode` is
    "max" (accuracy) or "min" (loss, perplexity). NaN/inf never count as improvement.
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer,
        val_metric: str,
        mode: str = "max",
        file_prefix: str = "model_best",
    ) -> None:
        _check_mode("BestCheckpointer", mode)
        self._period = _check_period("evaluation.eval_period", eval_period, allow_zero=True)
        self._checkpointer = checkpointer
        self._val_metric = val_metric
        self._mode = mode
        self._file_prefix = file_prefix
        self.best_metric: Optional[float] = None
        self.best_iter: Optional[int] = None
        self._checked_iter: Optional[int] = None
        self._warned_missing = False

    def _improves(self, value: float) -> bool:
        return _improvement(value, self.best_metric, self._mode)

    def _lookup(self) -> Optional[tuple]:
        found = latest_metric(self.trainer.storage, self._val_metric)
        if found is None and not self._warned_missing:
            logger.warning(
                "BestCheckpointer: metric '%s' is not among the evaluation results %s; "
                "no best checkpoint is saved. Set train.evaluation.eval_metric to one of them.",
                self._val_metric,
                sorted(self.trainer.storage.latest()),
            )
            self._warned_missing = True
        return found

    def _decide(self) -> bool:
        """Judge the latest evaluation (main process); True when it is a new best."""
        found = self._lookup()
        if found is None:
            return False
        value, itr = found
        if itr == self._checked_iter:  # already judged this evaluation
            return False
        self._checked_iter = itr
        if not self._improves(value):
            logger.info(
                "Not saving %s: %s = %.5f is not better than the best %.5f @ iteration %s.",
                self._file_prefix, self._val_metric, value, self.best_metric, self.best_iter,
            )
            return False
        logger.info(
            "Saving %s: %s = %.5f @ iteration %d (previous best: %s).",
            self._file_prefix, self._val_metric, value, itr, self.best_metric,
        )
        self.best_metric, self.best_iter = value, itr
        return True

    def _best_checking(self) -> None:
        # save() is collective, so every rank must take the same decision: the main
        # process decides and broadcasts it with its state (free on one process).
        state = None
        if dist.is_main_process():
            state = (self._decide(), self.best_metric, self.best_iter, self._checked_iter)
        save, self.best_metric, self.best_iter, self._checked_iter = dist.broadcast_object(state)
        if save:
            self._checkpointer.save(self._file_prefix, **_checkpoint_extra(self.trainer))

    def reads_metrics(self) -> bool:
        """An evaluation iteration: the model must follow finite losses."""
        return _is_eval_iter(self.trainer, self._period)

    def after_step(self) -> None:
        """Check on the same iterations as `EvalHook`."""
        if _is_eval_iter(self.trainer, self._period):
            self._best_checking()

    def after_train(self) -> None:
        """Check results of an end-of-training evaluation that ran in `after_train`."""
        if _training_finished(self.trainer):
            self._best_checking()

    def state_dict(self) -> Dict[str, Any]:
        """Best value so far, so a resumed run does not overwrite a better `model_best`."""
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.best_metric = state.get("best_metric")
        self.best_iter = state.get("best_iter")


class TopKCheckpointer(HookBase):
    """Keep the checkpoints of the `k` best evaluations of `val_metric`.

    At each evaluation (the `EvalHook`'s period, placed after it) a result that ranks among
    the k best is saved as `{file_prefix}_{iter:07d}`; the checkpoint it pushes out of the
    k best is deleted (never the one `last_checkpoint` names), and `top_k.json` in the
    save dir lists the k best, best first: iteration, value and directory. The list
    survives a resume (`state_dict`). Its names differ from the periodic checkpoints', so
    `max_to_keep` never deletes them and they never count against it.
    """

    def __init__(
        self, eval_period: int, checkpointer, val_metric: str, k: int, mode: str = "max", file_prefix: str = "model_top"
    ) -> None:
        _check_mode("TopKCheckpointer", mode)
        self._period = _check_period("evaluation.eval_period", eval_period, allow_zero=True)
        self.k = _check_period("checkpointer.save_top_k", k)
        self._checkpointer = checkpointer
        self._val_metric = val_metric
        self._mode = mode
        self._file_prefix = file_prefix
        self.best: List[Dict[str, Any]] = []  # best first
        self._judged_iter: Optional[int] = None

    def _ranked(self, entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        # Best first; among equal values the earlier evaluation ranks higher.
        sign = -1.0 if self._mode == "max" else 1.0
        return sorted(entries, key=lambda e: (sign * e["value"], e["iteration"]))

    def _judge(self) -> Optional[Dict[str, Any]]:
        """The latest evaluation as a new entry if it ranks among the k best (main process)."""
        found = latest_metric(self.trainer.storage, self._val_metric)
        if found is None or found[1] == self._judged_iter:
            return None
        value, self._judged_iter = found
        if math.isnan(value) or math.isinf(value):
            return None
        name = f"{self._file_prefix}_{self.trainer.iter:07d}"
        entry = {"iteration": int(self.trainer.iter), "value": float(value), "dir": name}
        return entry if entry in self._ranked(self.best + [entry])[: self.k] else None

    def reads_metrics(self) -> bool:
        """An evaluation iteration: the model must follow finite losses."""
        return _is_eval_iter(self.trainer, self._period)

    def after_step(self) -> None:
        """On evaluation iterations: save a new top-k result, drop the one it displaces."""
        if not _is_eval_iter(self.trainer, self._period):
            return
        entry = self._judge() if dist.is_main_process() else None
        entry, self._judged_iter = dist.broadcast_object((entry, self._judged_iter))
        if entry is None:
            return
        self._checkpointer.save(entry["dir"], **_checkpoint_extra(self.trainer))
        ranked = self._ranked(self.best + [entry])
        self.best, dropped = ranked[: self.k], ranked[self.k :]
        if dist.is_main_process():
            self._delete(dropped)
            self._write_list()

    def _delete(self, dropped: List[Dict[str, Any]]) -> None:
        save_dir = self._checkpointer.save_dir
        last = os.path.basename(os.path.normpath(self._checkpointer.get_checkpoint_file() or ""))
        for entry in dropped:
            if entry["dir"] != last:
                _remove_dir_atomically(os.path.join(save_dir, entry["dir"]))

    def _write_list(self) -> None:
        path = os.path.join(self._checkpointer.save_dir, "top_k.json")
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump([dict(entry, metric=self._val_metric) for entry in self.best], f, indent=1)
        os.replace(tmp, path)

    def state_dict(self) -> Dict[str, Any]:
        """The k best entries, best first."""
        return {"best": self.best, "judged_iter": self._judged_iter}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.best = [dict(entry) for entry in state.get("best", [])]
        self._judged_iter = state.get("judged_iter")


class EarlyStopping(HookBase):
    """End training when `val_metric` has not improved by more than `min_delta` for
    `patience` evaluations in a row, with a final checkpoint (`model_final`).

    Place it after the `EvalHook` whose `eval_period` it shares (and after the
    `BestCheckpointer`). The main process judges each evaluation once and broadcasts the
    decision, so every rank stops at the same iteration. The best value and the count of
    evaluations without improvement survive a resume (`state_dict`).
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer,
        val_metric: str,
        mode: str = "max",
        patience: int = 3,
        min_delta: float = 0.0,
        file_prefix: str = "model_final",
    ) -> None:
        _check_mode("EarlyStopping", mode)
        self._period = _check_period("evaluation.eval_period", eval_period, allow_zero=True)
        self.patience = _check_period("early_stopping.patience", patience)
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"early_stopping.min_delta must be a number >= 0, got {min_delta!r}")
        self.min_delta = float(min_delta)
        self._checkpointer = checkpointer
        self._val_metric = val_metric
        self._mode = mode
        self._file_prefix = file_prefix
        self.best_metric: Optional[float] = None
        self.evals_without_improvement = 0
        self._judged_iter: Optional[int] = None

    def _judge(self) -> Optional[str]:
        """Count the latest evaluation (main process); the reason to stop, or None."""
        found = latest_metric(self.trainer.storage, self._val_metric)
        if found is None or found[1] == self._judged_iter:
            return None
        value, self._judged_iter = found
        if _improvement(value, self.best_metric, self._mode, self.min_delta):
            self.best_metric, self.evals_without_improvement = value, 0
            return None
        self.evals_without_improvement += 1
        if self.evals_without_improvement < self.patience:
            return None
        return (
            f"early stopping: {self._val_metric} has not improved by more than {self.min_delta} for "
            f"{self.patience} evaluations (best {self.best_metric}, last {value})"
        )

    def reads_metrics(self) -> bool:
        """An evaluation iteration: the model must follow finite losses."""
        return _is_eval_iter(self.trainer, self._period)

    def after_step(self) -> None:
        """On evaluation iterations: judge, and stop every rank together."""
        # At the last iteration training ends anyway: nothing to stop.
        if not _is_eval_iter(self.trainer, self._period) or _is_last_iter(self.trainer):
            return
        state = None
        if dist.is_main_process():
            state = (self._judge(), self.best_metric, self.evals_without_improvement, self._judged_iter)
        reason, self.best_metric, self.evals_without_improvement, self._judged_iter = dist.broadcast_object(state)
        if reason is not None:
            self._checkpointer.save(self._file_prefix, **_checkpoint_extra(self.trainer))
            self.trainer.stop_training(reason)

    def state_dict(self) -> Dict[str, Any]:
        """The best value and the count of evaluations without improvement."""
        return {
            "best_metric": self.best_metric,
            "evals_without_improvement": self.evals_without_improvement,
            "judged_iter": self._judged_iter,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.best_metric = state.get("best_metric")
        self.evals_without_improvement = int(state.get("evals_without_improvement", 0))
        self._judged_iter = state.get("judged_iter")


class PeriodicWriter(HookBase):
    """Call every writer's `write()` when `(iter + 1) % period == 0` and after the last
    iteration; at the end of training write anything new (e.g. final eval) and close them.
    """

    def __init__(self, writers: List[EventWriter], period: int = 20) -> None:
        for writer in writers:
            if not isinstance(writer, EventWriter):
                raise TypeError(
                    f"PeriodicWriter takes EventWriter objects, got {type(writer).__name__}: "
                    "subclass libai.utils.events.EventWriter."
                )
        self._writers = list(writers)
        self._period = _check_period("train.log_period", period)

    def reads_metrics(self) -> bool:
        """A writing iteration: the writers read the steps' losses."""
        iteration = self.trainer.iter
        return (iteration + 1) % self._period == 0 or iteration == self.trainer.max_iter - 1

    def after_step(self) -> None:
        """Write on the period and at the last iteration."""
        iteration = self.trainer.iter
        if (iteration + 1) % self._period == 0 or iteration == self.trainer.max_iter - 1:
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        """Write what is new since the last write, then close the writers."""
        for writer in self._writers:
            writer.write()
            writer.close()
