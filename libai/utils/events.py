"""Training metrics: an `EventStorage` that hooks and the trainer fill each iteration, and
writers that turn it into a console line, `metrics.json`, TensorBoard events, a Weights &
Biases run and a picture of the curves (`curves.png`).

The storage is on the hot path (a handful of `put_scalar` calls per iteration), so it
does no formatting and no I/O; writers do that, and only when `PeriodicWriter` asks.

A writer is a subclass of `EventWriter` with two methods: `write()`, called on rank 0 every
`train.log_period` iterations and once after training, reads what is new in
`get_event_storage()`; `close()` releases its files once at the end. `_scalars_since`
gives the scalars put since the last write, by iteration, so a writer for another tracker
(MLflow, Aim, ...) is one small class; add it by overriding `DefaultTrainer.build_writers`.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import statistics
import time
from array import array
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from libai.utils.curves import plot_curves

__all__ = [
    "HistoryBuffer",
    "EventStorage",
    "get_event_storage",
    "EventWriter",
    "JSONWriter",
    "TensorboardXWriter",
    "CommonMetricPrinter",
    "WandbWriter",
    "CurvesWriter",
    "WANDB_MODES",
]

logger = logging.getLogger(__name__)

# Stack of active storages: `with EventStorage():` pushes, leaving pops. A stack (not a
# single global) lets an evaluation open its own storage inside a training run.
_CURRENT_STORAGE_STACK: List["EventStorage"] = []


class HistoryBuffer:
    """The history of one scalar: (value, iteration) pairs with windowed statistics.

    Values live in typed arrays (16 bytes a pair) so a long run does not grow Python
    objects per iteration. Only the last `max_length` pairs are kept; `global_avg` still
    covers every value ever added.
    """

    def __init__(self, max_length: int = 100_000) -> None:
        if max_length < 1:
            raise ValueError(f"HistoryBuffer max_length must be >= 1, got {max_length}.")
        self._max_length = max_length
        self._values = array("d")
        self._iters = array("q")
        self._count = 0
        self._global_sum = 0.0

    def update(self, value: float, iteration: Optional[int] = None) -> None:
        """Append `value` recorded at `iteration` (defaults to the number of updates so far)."""
        if iteration is None:
            iteration = self._count
        self._values.append(value)
        self._iters.append(iteration)
        self._count += 1
        self._global_sum += value
        # Trim in bulk once the buffer holds twice the limit: amortised O(1) per update.
        if len(self._values) > 2 * self._max_length:
            drop = len(self._values) - self._max_length
            del self._values[:drop]
            del self._iters[:drop]

    def _window(self, window_size: int) -> array:
        if not self._values:
            raise ValueError("HistoryBuffer is empty: put a value before reading statistics.")
        return self._values[-window_size:]

    def latest(self) -> float:
        """The most recent value."""
        return self._window(1)[0]

    def median(self, window_size: int) -> float:
        """Median of the last `window_size` values."""
        return statistics.median(self._window(window_size))

    def avg(self, window_size: int) -> float:
        """Mean of the last `window_size` values."""
        window = self._window(window_size)
        return sum(window) / len(window)

    def global_avg(self) -> float:
        """Mean of every value added since creation (including trimmed ones)."""
        if self._count == 0:
            raise ValueError("HistoryBuffer is empty: put a value before reading statistics.")
        return self._global_sum / self._count

    def values(self) -> List[Tuple[float, int]]:
        """The kept (value, iteration) pairs, oldest first."""
        start = max(0, len(self._values) - self._max_length)
        return list(zip(self._values[start:], self._iters[start:]))

    def __len__(self) -> int:
        return min(len(self._values), self._max_length)


def get_event_storage() -> "EventStorage":
    """The innermost active `EventStorage` (the one of the running trainer)."""
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() was called outside a `with EventStorage(...)` block: "
            "call it from a hook or the trainer's run_step, or open an EventStorage first."
        )
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Per-iteration scalar (and image) store shared by the trainer, hooks and writers.

    Use it as a context manager so `get_event_storage()` finds it. `iter` is the current
    iteration; the trainer sets it to `trainer.iter` before each step's hooks run.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self._history: Dict[str, HistoryBuffer] = {}
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest_scalars: Dict[str, Tuple[float, int]] = {}
        self._iter = int(start_iter)
        self._samples: Optional[int] = None
        self._current_prefix = ""
        self._vis_data: List[Tuple[str, Any, int]] = []

    # ---- recording ------------------------------------------------------------------

    def put_scalar(self, name: str, value: Any, smoothing_hint: bool = True, iteration: Optional[int] = None) -> None:
        """Record `value` (a number or 1-element tensor) for `name` at the current iteration,
        or at an earlier `iteration` (a trainer that reads its losses to the host only on
        logged iterations puts the steps in between then, in order).

        `smoothing_hint=True` asks writers to show a windowed median (noisy values such as
        losses and times); `False` shows the raw latest value (lr, eval results).
        """
        iteration = self._iter if iteration is None else int(iteration)
        name = self._current_prefix + name
        value = float(value)
        buffer = self._history.get(name)
        if buffer is None:
            buffer = self._history[name] = HistoryBuffer()
            self._smoothing_hints[name] = bool(smoothing_hint)
        elif self._smoothing_hints[name] != bool(smoothing_hint):
            raise ValueError(
                f"Scalar '{name}' was put with smoothing_hint={self._smoothing_hints[name]} "
                f"before and smoothing_hint={bool(smoothing_hint)} now: use one hint per name."
            )
        buffer.update(value, iteration)
        self._latest_scalars[name] = (value, iteration)

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs: Any) -> None:
        """`put_scalar` for each keyword argument, e.g. `put_scalars(loss=l, acc=a)`."""
        for name, value in kwargs.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint)

    def put_image(self, img_name: str, img_tensor: Any) -> None:
        """Queue a CHW image (float in [0, 1] or uint8) for the TensorBoard writer."""
        self._vis_data.append((img_name, img_tensor, self._iter))

    def clear_images(self) -> None:
        """Drop queued images (the TensorBoard writer calls this after writing them)."""
        self._vis_data = []

    # ---- reading --------------------------------------------------------------------

    def history(self, name: str) -> HistoryBuffer:
        """The `HistoryBuffer` of `name`; KeyError if it was never put."""
        buffer = self._history.get(name)
        if buffer is None:
            raise KeyError(f"No history metric available for '{name}'.")
        return buffer

    def histories(self) -> Dict[str, HistoryBuffer]:
        """Every scalar's `HistoryBuffer`, in first-put order."""
        return self._history

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """name -> (latest value, iteration it was put at)."""
        return self._latest_scalars

    def latest_with_smoothing_hint(self, window_size: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like `latest`, but scalars put with `smoothing_hint=True` give the median of
        their last `window_size` values instead of the raw latest one."""
        result = {}
        for name, (value, itr) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = self._history[name].median(window_size)
            result[name] = (value, itr)
        return result

    def smoothing_hints(self) -> Dict[str, bool]:
        """name -> smoothing hint given at the first put."""
        return self._smoothing_hints

    # ---- iteration ------------------------------------------------------------------

    def step(self) -> None:
        """Advance to the next iteration (for loops of one's own; `TrainerBase` sets `iter`
        to its own iteration instead)."""
        self._iter += 1

    @property
    def iter(self) -> int:
        """The current iteration: equal to `trainer.iter` inside hooks."""
        return self._iter

    @iter.setter
    def iter(self, value: int) -> None:
        self._iter = int(value)

    @property
    def samples(self) -> Optional[int]:
        """Samples consumed so far, if the trainer sets it (None otherwise)."""
        return self._samples

    @samples.setter
    def samples(self, value: int) -> None:
        self._samples = int(value)

    @contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix every scalar put inside the block with `name/`."""
        old_prefix = self._current_prefix
        self._current_prefix = name.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old_prefix

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        # Remove this storage even if an inner one leaked, so the stack never grows.
        if self in _CURRENT_STORAGE_STACK:
            while _CURRENT_STORAGE_STACK.pop() is not self:
                pass


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


class EventWriter:
    """Base class of writers that read the current `EventStorage` when `write()` is called."""

    def write(self) -> None:
        """Write what is new in the storage."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files; called once at the end of training."""


def _scalars_since(window_size: int, last_write: int) -> Dict[int, Dict[str, float]]:
    """iteration -> {name: value} of the scalars put after iteration `last_write`."""
    storage = get_event_storage()
    by_iter: Dict[int, Dict[str, float]] = {}
    for name, (value, itr) in storage.latest_with_smoothing_hint(window_size).items():
        if itr > last_write:
            by_iter.setdefault(itr, {})[name] = value
    return dict(sorted(by_iter.items()))


class JSONWriter(EventWriter):
    """Append one JSON object per written iteration to `json_file` (e.g. `metrics.json`).

    Each line holds `iteration` and every scalar put since the previous write (smoothed
    ones as the median of the last `window_size` values), at full float precision.
    Read it with `[json.loads(line) for line in open(path)]`.

    A resumed run continues the same file. The file is opened at the first write: lines of
    the iterations from there on, which a run stopped after its last checkpoint had
    written and the resumed run writes again, are dropped then (and a line cut short by a
    killed process), so each iteration appears once.
    """

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        self._path = json_file
        self._file = None
        self._window_size = window_size
        self._last_write = -1

    def _open(self, first_iteration: int) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        _drop_lines_from(self._path, first_iteration)
        self._file = open(self._path, "a")

    def write(self) -> None:
        """Append the new scalars, one line per iteration, and flush."""
        to_save = _scalars_since(self._window_size, self._last_write)
        if not to_save:
            return
        if self._file is None:
            self._open(min(to_save))
        for itr, scalars in to_save.items():
            # json.dumps writes floats with repr(): shortest exact round trip.
            line = {"iteration": itr, **dict(sorted(scalars.items()))}
            self._file.write(json.dumps(line) + "\n")
        self._last_write = max(to_save)
        # flush (no fsync): lines survive a killed process at the cost of one write call.
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()


def _drop_lines_from(path: str, first_iteration: int) -> None:
    """Rewrite the JSON-lines file `path` without its lines of iterations >= `first_iteration`
    and without lines that do not parse (atomically; untouched if nothing is dropped)."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return
    kept = [line for line in lines if _iteration_of(line) is not None and _iteration_of(line) < first_iteration]
    if len(kept) == len(lines):
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def _iteration_of(line: str) -> Optional[int]:
    try:
        return int(json.loads(line)["iteration"])
    except (ValueError, KeyError, TypeError):
        return None


class TensorboardXWriter(EventWriter):
    """Write scalars (and images put with `put_image`) as TensorBoard events in `log_dir`.

    `torch.utils.tensorboard` is imported here, not at module import, because loading
    TensorBoard takes a second and most users of `libai.utils.events` never need it.
    Scalars are handed to TensorBoard's writer thread at most every `buffer_secs`
    seconds and at `close()`: every hand-off wakes that thread, and the thread switches
    cost a small model's training loop more than building the events does.
    Other keyword arguments go to `SummaryWriter`, which is created at the first write
    (nothing is written to `log_dir` before) with `purge_step` at the first iteration
    written, so a resumed run replaces the events a stopped run wrote after its last
    checkpoint.
    """

    def __init__(
        self, log_dir: str, window_size: int = 20, buffer_secs: float = 5.0, **kwargs: Any
    ) -> None:
        try:
            import torch.utils.tensorboard  # noqa: F401 - fail here, not at the first write
        except ImportError as exc:  # pragma: no cover - tensorboard is a dependency
            raise ImportError(
                "TensorboardXWriter needs the `tensorboard` package: pip install tensorboard"
            ) from exc
        self._window_size = window_size
        self._buffer_secs = buffer_secs
        self._log_dir = log_dir
        # A long queue so that handing over a buffer of events never blocks on the thread.
        kwargs.setdefault("max_queue", 1000)
        self._writer_kwargs = kwargs
        self._writer = None
        self._last_write = -1
        self._pending: List[Tuple[int, Dict[str, float]]] = []
        self._last_hand_off = time.monotonic()

    def write(self) -> None:
        """Queue every scalar put since the last write, at the iteration it was put."""
        for itr, scalars in _scalars_since(self._window_size, self._last_write).items():
            self._pending.append((itr, scalars))
            self._last_write = max(self._last_write, itr)
        if self._writer is None and self._pending:
            from torch.utils.tensorboard import SummaryWriter

            self._writer_kwargs.setdefault("purge_step", self._pending[0][0])
            self._writer = SummaryWriter(self._log_dir, **self._writer_kwargs)
        if time.monotonic() - self._last_hand_off >= self._buffer_secs:
            self._hand_off()
        storage = get_event_storage()
        if storage._vis_data and self._writer is not None:
            for img_name, img, itr in storage._vis_data:
                self._writer.add_image(img_name, img, itr)
            storage.clear_images()

    def _hand_off(self) -> None:
        """Give the queued scalars to the SummaryWriter: one event per iteration."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        if self._writer is None:
            return
        file_writer = self._writer._get_file_writer()
        for itr, scalars in self._pending:
            values = [Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
            file_writer.add_summary(Summary(value=values), itr)
        self._pending = []
        self._last_hand_off = time.monotonic()

    def close(self) -> None:
        """Hand over what is queued, flush and close the event file."""
        self._hand_off()
        if self._writer is not None:
            self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Log one console line with ETA, iteration, consumed samples, losses, times,
    throughput and learning rate, e.g.::

        eta: 0:01:02  iteration: 19/100  consumed_samples: 640  total_loss: 2.301  \
time: 0.0123 s/iter  data_time: 0.0011 s/iter  total_throughput: 2601.63 samples/s  lr: 1.00e-04

    `batch_size` is the global batch size (samples per iteration over all ranks).
    """

    def __init__(self, batch_size: int, max_iter: int, window_size: int = 20) -> None:
        self._batch_size = batch_size
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_printed_iter: Optional[int] = None
        # (iteration, time) of the previous write, to estimate ETA before `time` exists.
        self._last_write: Optional[Tuple[int, float]] = None

    def _eta_and_iter_time(self, storage: EventStorage, iteration: int):
        remaining = self._max_iter - iteration - 1
        try:
            time_history = storage.history("time")
        except KeyError:
            time_history = None
        if time_history is not None:
            # Median over a long window: robust to the occasional slow step (eval, ckpt),
            # yet short enough that sorting it stays cheap.
            eta_seconds = time_history.median(200) * remaining
            storage.put_scalar("eta_seconds", eta_seconds, smoothing_hint=False)
            return eta_seconds, time_history.avg(self._window_size)
        eta_seconds = None
        now = time.perf_counter()
        if self._last_write is not None and iteration > self._last_write[0]:
            per_iter = (now - self._last_write[1]) / (iteration - self._last_write[0])
            eta_seconds = per_iter * remaining
        self._last_write = (iteration, now)
        return eta_seconds, None

    def write(self) -> None:
        """Log the line for the storage's current iteration (once per iteration)."""
        storage = get_event_storage()
        iteration = storage.iter
        # After training the trainer may call write() again (PeriodicWriter.after_train):
        # the progress line was already printed, so print nothing.
        if iteration >= self._max_iter or iteration == self._last_printed_iter:
            return
        self._last_printed_iter = iteration
        eta_seconds, iter_time = self._eta_and_iter_time(storage, iteration)
        consumed = storage.samples
        if consumed is None:
            consumed = (iteration + 1) * self._batch_size
        parts = []
        if eta_seconds is not None:
            parts.append(f"eta: {datetime.timedelta(seconds=int(eta_seconds))}")
        parts.append(f"iteration: {iteration}/{self._max_iter}")
        parts.append(f"consumed_samples: {consumed}")
        parts.extend(self._loss_parts(storage))
        if iter_time is not None:
            parts.append(f"time: {iter_time:.4f} s/iter")
        if "data_time" in storage.histories():
            data_time = storage.history("data_time").avg(self._window_size)
            parts.append(f"data_time: {data_time:.4f} s/iter")
        if iter_time:
            parts.append(f"total_throughput: {self._batch_size / iter_time:.2f} samples/s")
        lr = storage.histories().get("lr")
        parts.append(f"lr: {lr.latest():.2e}" if lr is not None else "lr: N/A")
        max_mem = _max_memory_mb()
        if max_mem is not None:
            parts.append(f"max_mem: {max_mem:.0f}M")
        logger.info("  ".join(parts))

    def _loss_parts(self, storage: EventStorage) -> List[str]:
        # total_loss first, then each loss term in the order it was first put.
        names = [name for name in storage.histories() if "loss" in name]
        names.sort(key=lambda name: name != "total_loss")
        return [
            f"{name}: {storage.history(name).median(self._window_size):.4g}" for name in names
        ]


def _max_memory_mb() -> Optional[float]:
    """Peak CUDA memory of this process in MiB, or None when CUDA is not in use."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 1024.0 / 1024.0
    return None


# --------------------------------------------------------------------------------------
# Weights & Biases
# --------------------------------------------------------------------------------------

WANDB_MODES = ("offline", "online", "disabled")
WANDB_MISSING = "the wandb package is not installed: pip install -e .[wandb] (it is an optional extra)"


class WandbWriter(EventWriter):
    """Log the scalars of each written iteration to a Weights & Biases run, at that
    iteration as W&B's `step`: the same values `JSONWriter` puts in `metrics.json`.

    The run is created at the first write (nothing exists before), in `output_dir/wandb`,
    with the YAML `config_file` (the run's resolved `config.yaml`) as its config. Its id is
    kept in `output_dir/wandb/run_id`, so a resumed run continues the same W&B run; W&B
    ignores the steps it already has, which a stopped run logged after its last checkpoint
    and an exact resume logs again with the same values. `mode="offline"` needs no network
    (`wandb sync output_dir/wandb/offline-run-*` uploads it later). W&B's capture of the
    console is off: the trainer's own `log.txt` holds it.
    """

    def __init__(
        self,
        output_dir: str,
        project: Optional[str] = None,
        name: Optional[str] = None,
        tags: Sequence[str] = (),
        mode: str = "offline",
        config_file: Optional[str] = None,
        window_size: int = 1,
    ) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"W&B mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}")
        try:
            import wandb  # noqa: F401 - fail when the writer is built, not at its first write
        except ImportError:
            raise ImportError(WANDB_MISSING) from None
        self._dir = os.path.join(output_dir, "wandb")
        self._init_kwargs = dict(project=project, name=name, tags=list(tags), mode=mode)
        self._config_file = config_file
        self._window_size = window_size
        self._run = None
        self._last_write = -1

    def _start_run(self) -> None:
        import wandb

        os.makedirs(self._dir, exist_ok=True)
        id_file = os.path.join(self._dir, "run_id")
        # W&B run ids are [a-z0-9]; 8 random hex digits as W&B's own.
        run_id = _read_text(id_file) or secrets.token_hex(4)
        self._run = wandb.init(
            dir=os.path.dirname(self._dir),
            id=run_id,
            resume="allow",
            config=_load_yaml_config(self._config_file),
            settings=wandb.Settings(console="off", silent=True),
            **self._init_kwargs,
        )
        with open(id_file, "w") as f:
            f.write(run_id)
        logger.info("W&B run %s (%s) in %s", run_id, self._init_kwargs["mode"], self._dir)

    def write(self) -> None:
        """Log the scalars put since the last write, one W&B step per iteration."""
        to_log = _scalars_since(self._window_size, self._last_write)
        if not to_log:
            return
        if self._run is None:
            self._start_run()
        for itr, scalars in to_log.items():
            self._run.log(scalars, step=itr)
        self._last_write = max(to_log)

    def close(self) -> None:
        """Finish the run (offline: its files are complete on disk)."""
        if self._run is not None:
            self._run.finish()
            self._run = None


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _load_yaml_config(path: Optional[str]) -> Dict[str, Any]:
    """The run's saved config as plain data for a tracker (empty when there is none)."""
    if path is None or not os.path.exists(path):
        return {}
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}


# --------------------------------------------------------------------------------------
# curves.png
# --------------------------------------------------------------------------------------


class CurvesWriter(EventWriter):
    """Draw `png_file` (loss terms, learning rate, each evaluation metric against the
    iteration) from the JSON-lines `json_file` that a `JSONWriter` before this writer
    fills: after each evaluation (when `eval_metric` was put since the last write) and at
    `close()`. The picture covers the whole run, also the part before a resume.
    """

    def __init__(self, json_file: str, png_file: str, eval_metric: Optional[str] = None) -> None:
        self._json_file = json_file
        self._png_file = png_file
        self._eval_metric = eval_metric
        self._last_write = -1

    def write(self) -> None:
        """Redraw when an evaluation's metric is new since the last write."""
        storage = get_event_storage()
        latest = storage.latest().get(self._eval_metric) if self._eval_metric else None
        if latest is not None and latest[1] > self._last_write:
            plot_curves(self._json_file, self._png_file)
        self._last_write = storage.iter

    def close(self) -> None:
        """Draw the final picture."""
        plot_curves(self._json_file, self._png_file)
