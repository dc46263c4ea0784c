"""Checkpoints that are written whole or not at all, and load under any parallel layout.

A checkpoint is a directory ``save_dir/<name>/`` in the format of
``torch.distributed.checkpoint`` (DCP): every rank writes its own shards (a model sharded
with DTensor is stored shard by shard) and rank 0 writes ``.metadata``, which records the
global shape of every tensor. Because loading reads by global shape and name, a checkpoint
saved on 2 processes loads on 1 or 8, under another data/tensor/pipeline layout.

Inside the DCP state dict:

- ``model``: ``get_model_state_dict(model)``
- one entry per checkpointable: optimizers through ``get_optimizer_state_dict`` (parameter
  names instead of positions, so the layout may change); anything else through its own
  ``state_dict()`` (e.g. LR schedulers, a GradScaler)
- ``extra``: the keyword arguments of ``save`` (iteration, consumed samples...) as JSON
- ``trainer``: the trainer's ``state_dict()`` (its iteration and its hooks' state) as JSON,
  when the Checkpointer was given the trainer
- ``__libai_meta__``: bookkeeping for loading (JSON)

Non-model state (scheduler, extra, plain tensors) must be equal on every rank: DCP keeps one
copy of replicated values.

Every checkpoint directory also holds ``checksums.json``: the size and xxh3-64 hash of each
of its files. Loading checks them first (rank 0 reads the files, every rank gets the
verdict), so a flipped byte or a truncated file is a `CheckpointError` naming the file, and
resuming falls back to the newest checkpoint that passes.

Writing is atomic at the directory level:

1. all ranks write into a hidden sibling ``save_dir/.tmp-<token>-<name>/``;
2. when DCP has finished on every rank (``.metadata`` is the last file it writes), rank 0
   records the checksums, then renames the hidden directory to ``<name>`` (an existing ``<name>``, e.g. ``model_final``,
   is first renamed away to ``.old-<token>-<name>`` and deleted afterwards);
3. rank 0 replaces ``save_dir/last_checkpoint`` through a temporary file and ``os.replace``.

A run killed at any point therefore leaves either the old or the new checkpoint under its
name, ``last_checkpoint`` names a complete directory, and leftovers are hidden directories
that the next save of the same name removes. The file system must be shared by all ranks
(as for any DCP checkpoint).
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import pickle
import re
import shutil
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import xxhash
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from libai.utils import distributed as dist_utils

logger = logging.getLogger(__name__)

__all__ = ["Checkpointer", "CheckpointError", "CorruptCheckpointError", "LAST_CHECKPOINT_FILE", "verify_checksums", "write_checksums"]

LAST_CHECKPOINT_FILE = "last_checkpoint"
METADATA_FILE = ".metadata"
CHECKSUM_FILE = "checksums.json"
MODEL_KEY = "model"
EXTRA_KEY = "extra"
TRAINER_KEY = "trainer"
META_KEY = "__libai_meta__"
FORMAT_VERSION = 1
# Optimizer state flattened to one entry per parameter name, hyperparameters included
# ("param_groups.<name>.lr"): each pipeline stage then reads the groups of its own
# parameters, where a single saved `param_groups` list would hold only one stage's.
_OPTIM_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
_RESERVED = (MODEL_KEY, EXTRA_KEY, TRAINER_KEY, META_KEY)
# Hidden working directories: ".tmp-<12 hex>-<name>" (being written) and
# ".old-<12 hex>-<name>" (a replaced checkpoint waiting to be deleted).
_WORK_DIR = re.compile(r"^\.(?P<kind>tmp|old)-(?P<token>[0-9a-f]{12})-(?P<name>.+)$")
_FIX_LOAD = "delete it or point --resume/train.load_weight elsewhere"
# DCP reports failures of any rank as CheckpointException, a BaseException.
_FAILURES = (Exception, CheckpointException)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the path and the fix."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint whose files are missing, truncated or altered since they were written."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """`exc` as one short line; DCP wraps per-rank failures, so unwrap to the first cause."""
    failures = getattr(exc, "failures", None)  # torch.distributed.checkpoint.CheckpointException
    if isinstance(failures, dict) and failures:
        rank = min(failures)
        cause = failures[rank]
        cause = cause[0] if isinstance(cause, tuple) else cause
        cause_text = _one_line(cause, limit)
        return f"rank {rank}: {cause_text}" if dist_utils.get_world_size() > 1 else cause_text
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _fsync_dir(path: str) -> None:
    """Make renames inside `path` durable (best effort: not every file system supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _to_json(extra: dict) -> str:
    """Serialize `save(**extra)`; numpy/torch scalars become Python numbers."""

    def scalar(obj: Any) -> Any:
        if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
            return obj.item()
        raise TypeError(type(obj).__name__)

    try:
        return json.dumps(extra, default=scalar)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Checkpointer.save(**extra): every extra value must be JSON-serializable "
            f"(numbers, strings, lists, dicts), got {exc}; convert it before saving"
        ) from None


def _all_errors(message: Optional[str]) -> list[str]:
    """Every rank's error message (None = ok), so that all ranks fail or go on together.

    DCP already reports a failure identically on every rank; only errors that some ranks
    alone hit get a "rank r:" prefix.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [message] if message else []
    gathered: list[Optional[str]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, message)
    failed = [(rank, m) for rank, m in enumerate(gathered) if m]
    if len(failed) == len(gathered) and len(set(gathered)) == 1:
        return [failed[0][1]]
    return [f"rank {rank}: {m}" for rank, m in failed]


def _shape(value: Any) -> Any:
    """Global shape of a state-dict value (a DTensor reports its full shape)."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else "non-tensor"


def _saved_shape(meta: Any) -> Any:
    """Global shape recorded in the checkpoint's metadata for one entry."""
    return tuple(meta.size) if isinstance(meta, TensorStorageMetadata) else "non-tensor"


def _few(items: list) -> str:
    """The first few items of a list, for a one-line message."""
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def get_missing_parameters_message(keys: list[str]) -> str:
    """The one-line warning for model weights a checkpoint lacks (LiBai's name)."""
    return f"Weights not in the checkpoint, left as initialized: {_few(list(keys))}"


def get_unexpected_parameters_message(keys: list[str]) -> str:
    """The one-line warning for checkpoint weights the model lacks (LiBai's name)."""
    return f"Weights in the checkpoint that the model lacks, ignored: {_few(list(keys))}"


@contextmanager
def _grads_set_aside(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Run the block with the optimizer's grads set to None, then put them back."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        for p, grad in zip(params, grads):
            p.grad = grad


def _no_dist() -> bool:
    # Without a process group DCP falls back to one process (and warns); say so explicitly.
    return not dist.is_initialized()


# --------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------


def file_digest(path: str) -> str:
    """The xxh3-64 hash of a file's bytes, as hex (read through mmap: no copies)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return xxhash.xxh3_64_hexdigest(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return xxhash.xxh3_64_hexdigest(data)


def write_checksums(directory: str) -> None:
    """Record the size and hash of every file in `directory` in its ``checksums.json``."""
    files = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name != CHECKSUM_FILE and os.path.isfile(path):
            files[name] = {"size": os.path.getsize(path), "xxh3_64": file_digest(path)}
    path = os.path.join(directory, CHECKSUM_FILE)
    with open(path, "w") as f:
        json.dump({"format": 1, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def verify_checksums(directory: str) -> None:
    """Raise `CheckpointError` naming the first file of `directory` that is missing,
    truncated or altered since ``checksums.json`` was written.

    A directory without ``checksums.json`` (written before checksums existed) passes with
    a warning.
    """
    manifest_path = os.path.join(directory, CHECKSUM_FILE)
    if not os.path.isfile(manifest_path):
        logger.warning(f"{directory} has no {CHECKSUM_FILE}: its files cannot be verified")
        return
    try:
        with open(manifest_path) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"checkpoint {directory}: {CHECKSUM_FILE} is unreadable ({_one_line(exc)}): {_FIX_LOAD}") from None
    for name, expected in files.items():
        problem = _file_problem(os.path.join(directory, name), expected)
        if problem:
            raise CorruptCheckpointError(f"checkpoint {directory}: file {name} {problem}: {_FIX_LOAD}")


def _file_problem(path: str, expected: dict) -> Optional[str]:
    """Why `path` does not match its recorded size and hash, or None."""
    if not os.path.isfile(path):
        return "is missing"
    size = os.path.getsize(path)
    if size != expected["size"]:
        return f"has {size} bytes, {expected['size']} were written (truncated or altered)"
    if file_digest(path) != expected["xxh3_64"]:
        return "does not match its checksum (corrupted)"
    return None


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` admitting only what DCP writes there: its own metadata
    classes, torch sizes, dtypes and layouts, and paths. Anything else (a callable that would
    run on load) is refused, so loading a checkpoint from elsewhere runs no code."""

    _CLASS_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem", "pathlib")
    _FUNCTIONS = {("torch.serialization", "_get_layout")}

    def find_class(self, module: str, name: str) -> Any:
        if "." not in name:
            if (module, name) in self._FUNCTIONS or (module == "torch" and name == "Size"):
                return super().find_class(module, name)
            if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
            if module in self._CLASS_MODULES:
                found = super().find_class(module, name)
                if isinstance(found, type) and found.__module__ == module:
                    return found
        raise pickle.UnpicklingError(f"it holds a pickled {module}.{name}, which a checkpoint never needs")


def _check_metadata_pickle(path: str) -> None:
    """Refuse a ``.metadata`` that would run code when DCP unpickles it."""
    with open(os.path.join(path, METADATA_FILE), "rb") as f:
        try:
            _MetadataUnpickler(f).load()
        except pickle.UnpicklingError as exc:
            if "a checkpoint never needs" in str(exc):
                raise CheckpointError(
                    f"checkpoint {path}: {METADATA_FILE} is refused ({exc}; loading would run code): load "
                    f"only checkpoints written by libai's Checkpointer, or {_FIX_LOAD}"
                ) from None
        except Exception:  # noqa: BLE001 - unreadable files are reported by DCP's own reader below
            pass


# --------------------------------------------------------------------------------------
# Checkpointer
# --------------------------------------------------------------------------------------


class Checkpointer:
    """Save and load a model plus its training state (optimizer, scheduler, ...).

    Args:
        model: the model whose weights are saved (DDP/compiled/DTensor-sharded models work;
            names are the plain module names).
        save_dir: directory holding the checkpoints and ``last_checkpoint``; ``""`` disables
            saving.
        save_to_disk: ``False`` turns `save` into a no-op. Every rank takes part in writing
            (each writes its own shards), so unlike detectron2 this must be the same on all
            ranks; ``None`` means ``True``.
        trainer: a `TrainerBase` whose ``state_dict()`` (iteration, hooks' state; JSON-able)
            is saved with every checkpoint and restored when resuming.
        **checkpointables: objects with ``state_dict``/``load_state_dict`` saved next to the
            model (``optimizer=...``, ``scheduler=...``). ``None`` values are skipped.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        trainer: Any = None,
        **checkpointables: Any,
    ) -> None:
        self.model = model
        self.trainer = trainer
        self.save_dir = save_dir
        self.save_to_disk = True if save_to_disk is None else bool(save_to_disk)
        self.checkpointables: dict[str, Any] = {}
        for name, obj in checkpointables.items():
            if obj is not None:
                self.add_checkpointable(name, obj)

    def add_checkpointable(self, name: str, obj: Any) -> None:
        """Save and load `obj` (anything with state_dict/load_state_dict) under `name`."""
        if name in _RESERVED or "." in name:
            raise ValueError(
                f"checkpointable name {name!r} is reserved or contains '.': "
                f"use another name (reserved: {', '.join(_RESERVED)})"
            )
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(
                f"checkpointable {name!r} ({type(obj).__name__}) has no state_dict/"
                f"load_state_dict: only pass objects that can save and restore their state"
            )
        self.checkpointables[name] = obj

    # ----------------------------------------------------------------------------------
    # Saving
    # ----------------------------------------------------------------------------------

    def save(self, name: str, **extra: Any) -> Optional[str]:
        """Write ``save_dir/name/`` whole or not at all and point ``last_checkpoint`` at it.

        Collective: every rank must call it with the same `name` and `extra`. `extra`
        (e.g. ``iteration=...``) must be JSON-serializable and comes back from `load`.
        Returns the checkpoint directory, or None when saving is disabled. On failure every
        rank raises `CheckpointError` and the previous checkpoints are untouched.
        """
        if not self.save_dir or not self.save_to_disk:
            return None
        self._check_name(name)
        extra_json = _to_json(extra)
        final = os.path.join(self.save_dir, name)
        tmp, token = self._make_work_dir(name)

        def failed(cause: str) -> str:
            return (
                f"could not write checkpoint {final} ({cause}); the previous checkpoints are "
                f"kept: fix the cause (disk space, permissions) and save again"
            )

        try:
            state = self._state_to_save(extra_json)
            message = None
        except _FAILURES as exc:  # agree before DCP starts its collectives, or ranks would hang
            message = _one_line(exc)
        self._cleanup_on_error(message, tmp, failed)

        try:
            dcp.save(state, storage_writer=dcp.FileSystemWriter(tmp), no_dist=_no_dist())
            message = None
        except _FAILURES as exc:
            message = _one_line(exc)
        self._cleanup_on_error(message, tmp, failed)

        message = None
        if dist_utils.is_main_process():
            try:
                self._commit(tmp, final, name, token)
                logger.info(f"Saved checkpoint to {final}")
            except Exception as exc:
                message = _one_line(exc)
        # Only rank 0 commits: every rank learns its outcome and fails the same way.
        message = dist_utils.broadcast_object(message, src=0)
        if message:
            raise CheckpointError(failed(message))
        return final

    @staticmethod
    def _check_name(name: str) -> None:
        if not name or name.startswith(".") or os.sep in name or name in (LAST_CHECKPOINT_FILE,):
            raise ValueError(
                f"invalid checkpoint name {name!r}: use a plain directory name such as "
                f"'model_0000999' (no path separator, not starting with '.')"
            )

    def _make_work_dir(self, name: str) -> tuple[str, str]:
        """Rank 0 picks a fresh hidden directory name; every rank gets the same one."""
        message, token = None, uuid.uuid4().hex[:12]
        if dist_utils.is_main_process():
            try:
                os.makedirs(self.save_dir, exist_ok=True)
            except OSError as exc:
                message = _one_line(exc)
        token, message = dist_utils.broadcast_object((token, message), src=0)
        if message:
            raise CheckpointError(
                f"cannot create checkpoint directory {self.save_dir} ({message}): "
                f"fix the path or its permissions (train.output_dir)"
            )
        return os.path.join(self.save_dir, f".tmp-{token}-{name}"), token

    def _cleanup_on_error(
        self, message: Optional[str], tmp: str, failed: Callable[[str], str]
    ) -> None:
        """If any rank failed: rank 0 deletes the partial directory, then all ranks raise."""
        errors = _all_errors(message)
        if not errors:
            return
        if dist_utils.is_main_process():
            shutil.rmtree(tmp, ignore_errors=True)
        dist_utils.synchronize()  # when any rank sees the error, the partial files are gone
        raise CheckpointError(failed(errors[0]))

    def _state_to_save(self, extra_json: str) -> dict[str, Any]:
        state: dict[str, Any] = {MODEL_KEY: self._model_state()}
        empty_optimizers = []
        for name, obj in self.checkpointables.items():
            if isinstance(obj, torch.optim.Optimizer):
                if not obj.state:
                    empty_optimizers.append(name)
                state[name] = self._optimizer_state(obj)
            else:
                state[name] = obj.state_dict()
        meta = {
            "format": FORMAT_VERSION,
            "world_size": dist_utils.get_world_size(),
            "empty_optimizers": empty_optimizers,
        }
        state[EXTRA_KEY] = extra_json
        if self.trainer is not None:
            state[TRAINER_KEY] = _to_json(self.trainer.state_dict())
        state[META_KEY] = json.dumps(meta)
        return state

    def _model_state(self) -> dict[str, Any]:
        """The model's state dict without the entries another pipeline stage holds."""
        return {k: v for k, v in get_model_state_dict(self.model).items() if dist_utils.holds(v)}

    def _optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """`get_optimizer_state_dict` without side effects on the live optimizer.

        For an optimizer that has not stepped yet, DCP's helper creates the state by taking
        a step with lr=0 and zero grads (and skips that if grads exist, which would leave
        the state empty). That step would change the step count, so the state is dropped
        again afterwards (and restored as empty on load, see `_apply`); existing grads, e.g.
        in the middle of gradient accumulation, are put back.
        """
        if optimizer.state:
            return get_optimizer_state_dict(self.model, optimizer, options=_OPTIM_OPTIONS)
        with _grads_set_aside(optimizer):
            try:
                return get_optimizer_state_dict(self.model, optimizer, options=_OPTIM_OPTIONS)
            finally:
                optimizer.state.clear()

    def _commit(self, tmp: str, final: str, name: str, token: str) -> None:
        """Rank 0: move the finished directory in place, then update `last_checkpoint`."""
        if not os.path.isfile(os.path.join(tmp, METADATA_FILE)):
            raise CheckpointError(f"{tmp} has no {METADATA_FILE} after writing")
        write_checksums(tmp)
        old = None
        if os.path.lexists(final):
            # Two renames: a crash in between leaves `final` missing, and loading then
            # falls back to the ".old-" copy (see `_resolve_dir`).
            old = os.path.join(self.save_dir, f".old-{token}-{name}")
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(self.save_dir)
        self._write_last_checkpoint(name)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._remove_leftovers(name)

    def _write_last_checkpoint(self, name: str) -> None:
        path = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        with open(tmp, "w") as f:
            f.write(name)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.save_dir)

    def _remove_leftovers(self, name: str) -> None:
        """Delete hidden directories that crashed saves of `name` left behind."""
        for entry in os.listdir(self.save_dir):
            match = _WORK_DIR.match(entry)
            if match and match.group("name") == name:
                shutil.rmtree(os.path.join(self.save_dir, entry), ignore_errors=True)

    # ----------------------------------------------------------------------------------
    # Finding checkpoints
    # ----------------------------------------------------------------------------------

    def has_checkpoint(self) -> bool:
        """Whether ``save_dir`` has a ``last_checkpoint`` file (something to resume from)."""
        return bool(self.save_dir) and os.path.isfile(
            os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        )

    def get_checkpoint_file(self) -> str:
        """Path of the checkpoint that ``last_checkpoint`` names, or "" if there is none."""
        path = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        try:
            with open(path) as f:
                name = f.read().strip()
        except OSError:
            return ""
        return os.path.join(self.save_dir, name) if name else ""

    def get_all_checkpoint_files(self) -> list[str]:
        """Complete checkpoint directories in ``save_dir`` (hidden work dirs excluded), sorted."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        return sorted(
            os.path.join(self.save_dir, entry)
            for entry in os.listdir(self.save_dir)
            if not entry.startswith(".")
            and os.path.isfile(os.path.join(self.save_dir, entry, METADATA_FILE))
        )

    @staticmethod
    def _resolve_dir(path: str) -> str:
        """`path`, or the copy it replaced if a save of the same name died mid-rename."""
        if os.path.exists(path):
            return path
        parent, name = os.path.split(os.path.normpath(path))
        try:
            entries = os.listdir(parent or ".")
        except OSError:
            entries = []
        olds = []
        for entry in entries:
            match = _WORK_DIR.match(entry)
            old = os.path.join(parent, entry)
            if (
                match
                and match.group("kind") == "old"
                and match.group("name") == name
                and os.path.isfile(os.path.join(old, METADATA_FILE))
            ):
                olds.append(old)
        if not olds:
            raise CheckpointError(
                f"checkpoint {path} does not exist: check the path, or {_FIX_LOAD}"
            )
        chosen = max(olds, key=os.path.getmtime)
        logger.warning(
            f"{path} was being replaced when a run stopped; loading its previous copy {chosen}"
        )
        return chosen

    # ----------------------------------------------------------------------------------
    # Loading
    # ----------------------------------------------------------------------------------

    def resume_or_load(self, path: Optional[str], resume: bool = True) -> dict:
        """Resume from ``last_checkpoint`` if `resume` and it exists, else load weights from `path`.

        Resuming restores the model and every checkpointable and returns the saved
        `extra` dict. Loading weights only (fine-tuning, evaluation) leaves the optimizer
        etc. as they are and returns ``{}``, so a new run starts at iteration 0.
        """
        if resume and self.has_checkpoint():
            return self._resume(self.get_checkpoint_file())
        if resume:
            logger.info(f"No checkpoint to resume from in {self.save_dir!r}")
        if path:
            self.load_model_weights(path)
        return {}

    def _resume(self, latest: str) -> dict:
        """Load `latest`; if its files fail their check, the newest checkpoint that passes."""
        try:
            return self.load(latest)
        except CorruptCheckpointError as exc:
            failure = exc
        others = [c for c in self.get_all_checkpoint_files() if os.path.normpath(c) != os.path.normpath(latest)]
        others.sort(key=lambda c: os.path.getmtime(os.path.join(c, METADATA_FILE)), reverse=True)
        for candidate in others:
            logger.warning(f"{failure}; resuming from {candidate}, the newest other checkpoint, instead")
            try:
                return self.load(candidate)
            except CorruptCheckpointError as exc:
                failure = exc
        raise CheckpointError(f"{failure} (and no other checkpoint in {self.save_dir} passes its check)")

    def load_model_weights(self, path: str) -> None:
        """Load only the model weights from checkpoint `path`.

        Lenient like LiBai's ``load_weight``: weights missing in the checkpoint or with a
        different shape keep their current values, extra weights are ignored; both are
        logged as warnings.
        """
        self.load(path, checkpointables=[])

    def load(self, path: str, checkpointables: Optional[Iterable[str]] = None) -> dict:
        """Load the model and `checkpointables` (default: all) from `path`; return its extra dict.

        Collective: every rank must call it. When any checkpointable is loaded (resuming
        training) the model must match the checkpoint exactly; with ``checkpointables=[]``
        mismatches are skipped with a warning. Checkpointables that the checkpoint lacks
        are skipped with a warning. Any missing, unreadable or corrupt checkpoint raises
        `CheckpointError` on every rank; nothing on disk is changed.
        """
        names = list(self.checkpointables) if checkpointables is None else list(checkpointables)
        unknown = [n for n in names if n not in self.checkpointables]
        if unknown:
            raise ValueError(
                f"unknown checkpointables {unknown}: this Checkpointer has "
                f"{sorted(self.checkpointables)}"
            )
        path = self._resolve_dir(path)
        metadata = self._read_metadata(path)
        self._verify(path)
        saved = metadata.state_dict_metadata
        saved_top = {key.split(".", 1)[0] for key in saved}
        for name in [n for n in names if n not in saved_top]:
            logger.warning(f"{path} has no '{name}' state; {name} keeps its current state")
        names = [n for n in names if n in saved_top]
        strict = bool(names)
        logger.info(f"Loading checkpoint from {path}" + ("" if strict else " (model weights only)"))

        template: dict[str, Any] = {MODEL_KEY: self._model_template(path, saved, strict)}
        for name in names:
            obj = self.checkpointables[name]
            if isinstance(obj, torch.optim.Optimizer):
                template[name] = self._optimizer_state(obj)
            else:
                template[name] = obj.state_dict()
        keys = [EXTRA_KEY, META_KEY] + ([TRAINER_KEY] if strict and self.trainer is not None else [])
        for key in keys:
            if key in saved:
                template[key] = ""
        try:
            dcp.load(
                template,
                storage_reader=dcp.FileSystemReader(path),
                planner=DefaultLoadPlanner(allow_partial_load=False),
                no_dist=_no_dist(),
            )
        except _FAILURES as exc:
            raise CheckpointError(
                f"cannot load checkpoint {path} ({_one_line(exc)}): the checkpoint is corrupt "
                f"or does not match this model and training state: {_FIX_LOAD}"
            ) from exc
        return self._apply(template, names)

    @staticmethod
    def _verify(path: str) -> None:
        """`verify_checksums` on rank 0 (the files are shared); every rank gets the verdict."""
        message = None
        if dist_utils.is_main_process():
            try:
                verify_checksums(path)
            except CorruptCheckpointError as exc:
                message = str(exc)
        message = dist_utils.broadcast_object(message, src=0)
        if message:
            raise CorruptCheckpointError(message)

    @staticmethod
    def _read_metadata(path: str) -> Metadata:
        if os.path.isfile(path):
            raise CheckpointError(
                f"{path} is a file, not a checkpoint directory written by libai's Checkpointer: "
                f"{_FIX_LOAD}"
            )
        if not os.path.isfile(os.path.join(path, METADATA_FILE)):
            raise CheckpointError(
                f"{path} is not a complete checkpoint (no {METADATA_FILE} file): {_FIX_LOAD}"
            )
        _check_metadata_pickle(path)
        try:
            metadata = dcp.FileSystemReader(path).read_metadata()
            if not isinstance(getattr(metadata, "state_dict_metadata", None), dict):
                raise TypeError("unexpected metadata format")
            return metadata
        except _FAILURES as exc:
            raise CheckpointError(
                f"checkpoint {path} has an unreadable {METADATA_FILE} ({_one_line(exc)}): "
                f"{_FIX_LOAD}"
            ) from exc

    def _model_template(self, path: str, saved: dict, strict: bool) -> dict[str, Any]:
        """The model's state dict, reduced to the entries that can be read from `saved`."""
        everything = get_model_state_dict(self.model)
        # Under pipeline parallelism this rank reads only its stage's entries; the other
        # stages' entries are expected in the file, not "unexpected".
        template = {k: v for k, v in everything.items() if dist_utils.holds(v)}
        prefix = MODEL_KEY + "."
        saved_model = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
        missing = [k for k in template if k not in saved_model]
        unexpected = [k for k in saved_model if k not in everything]
        mismatched = {
            key: f"{key}: checkpoint {_saved_shape(saved_model[key])} vs model {_shape(value)}"
            for key, value in template.items()
            if key in saved_model and _saved_shape(saved_model[key]) != _shape(value)
        }
        found = {
            "missing": missing,
            "unexpected": unexpected,
            "shape mismatch": list(mismatched.values()),
        }
        if strict and any(found.values()):
            problems = "; ".join(f"{kind} {_few(items)}" for kind, items in found.items() if items)
            raise CheckpointError(
                f"checkpoint {path} does not match the model ({problems}): resume with the model "
                f"it was saved from, or load weights only (train.load_weight without --resume)"
            )
        if missing:
            logger.warning(f"{get_missing_parameters_message(missing)} ({path})")
        if mismatched:
            logger.warning(
                f"Weights with another shape in {path}, left as initialized: "
                f"{_few(list(mismatched.values()))}"
            )
        if unexpected:
            logger.warning(f"{get_unexpected_parameters_message(unexpected)} ({path})")
        return {k: v for k, v in template.items() if k not in mismatched and k not in missing}

    def _apply(self, template: dict[str, Any], names: list[str]) -> dict:
        """Hand the loaded values to the model and the checkpointables; return `extra`."""
        # Not strict: `_model_template` already checked (or reported) what is missing.
        options = StateDictOptions(strict=False)
        set_model_state_dict(self.model, template[MODEL_KEY], options=options)
        meta = json.loads(template.get(META_KEY) or "{}")
        for name in names:
            obj = self.checkpointables[name]
            if isinstance(obj, torch.optim.Optimizer):
                with _grads_set_aside(obj):
                    set_optimizer_state_dict(self.model, obj, template[name], options=_OPTIM_OPTIONS)
                if name in meta.get("empty_optimizers", ()):
                    # Saved before its first step: restore "no state" exactly.
                    obj.state.clear()
            else:
                obj.load_state_dict(template[name])
        if template.get(TRAINER_KEY):
            self.trainer.load_state_dict(json.loads(template[TRAINER_KEY]))
        return json.loads(template.get(EXTRA_KEY) or "{}")
