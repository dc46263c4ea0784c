"""Logging setup: console on the main process, one log file per rank."""
from __future__ import annotations

import functools
import logging
import logging.handlers
import os
import sys
from typing import Optional

__all__ = ["setup_logger", "log_ignored_arguments"]

_DATE_FORMAT = "%m/%d %H:%M:%S"

# Marker attribute on handlers this module adds; its value says which console/file the
# handler serves, so repeated setup_logger calls never add a second handler for it.
_HANDLER_KEY = "_libai_handler_key"


class _ColorfulFormatter(logging.Formatter):
    """Console formatter: green logger name, warnings and errors flagged in red."""

    _GREEN = "\x1b[32m"
    _RED = "\x1b[31m"
    _RED_BLINK = "\x1b[31;5m"
    _RESET = "\x1b[0m"

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = super().formatMessage(record)
        if record.levelno >= logging.ERROR:
            return f"{self._RED_BLINK}ERROR{self._RESET} {message}"
        if record.levelno >= logging.WARNING:
            return f"{self._RED}WARNING{self._RESET} {message}"
        return message


def _log_file_path(output: str, distributed_rank: int) -> str:
    """`output` itself if it names a .txt/.log file, else `output/log.txt`; ranks > 0
    get `.rank{r}` appended so processes never write into the same file."""
    if output.endswith((".txt", ".log")):
        path = output
    else:
        path = os.path.join(output, "log.txt")
    if distributed_rank > 0:
        path = f"{path}.rank{distributed_rank}"
    return os.path.abspath(path)


def _has_handler(logger: logging.Logger, key: tuple) -> bool:
    return any(getattr(h, _HANDLER_KEY, None) == key for h in logger.handlers)


def setup_logger(
    output: Optional[str] = None,
    distributed_rank: int = 0,
    name: str = "libai",
    color: bool = True,
    abbrev_name: Optional[str] = None,
) -> logging.Logger:
    """Configure and return the logger `name` (module loggers `libai.*` inherit it).

    Rank 0 logs to stdout (INFO and up); every rank with an `output` logs everything to
    `output/log.txt` (rank 0) or `output/log.txt.rank{r}` (rank r). Calling it again adds
    only handlers that are not there yet, so it is safe to call from several entry points.

    Args:
        output: a directory, or a file path ending in .txt/.log; None logs no file.
        distributed_rank: global rank of this process.
        name: logger to configure.
        color: colour the console output (only when stdout is a terminal).
        abbrev_name: short name shown in console lines instead of `name`.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    # The handlers live here; propagating to the root would print each line twice when
    # the application also configured the root logger.
    logger.propagate = False
    short_name = abbrev_name if abbrev_name is not None else name
    plain = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", _DATE_FORMAT)

    console_key = ("console",)
    if distributed_rank == 0 and not _has_handler(logger, console_key):
        handler = logging.StreamHandler(stream=sys.stdout)
        handler.setLevel(logging.INFO)
        if color and sys.stdout.isatty():
            fmt = f"\x1b[32m[%(asctime)s {short_name}]:\x1b[0m %(message)s"
            handler.setFormatter(_ColorfulFormatter(fmt, _DATE_FORMAT))
        else:
            handler.setFormatter(
                logging.Formatter(f"[%(asctime)s {short_name}]: %(message)s", _DATE_FORMAT)
            )
        setattr(handler, _HANDLER_KEY, console_key)
        logger.addHandler(handler)

    if output is not None:
        path = _log_file_path(output, distributed_rank)
        file_key = ("file", path)
        if not _has_handler(logger, file_key):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handler = logging.FileHandler(path, mode="a", encoding="utf-8")
            handler.setLevel(logging.DEBUG)
            handler.setFormatter(plain)
            setattr(handler, _HANDLER_KEY, file_key)
            logger.addHandler(handler)
    return logger


def log_ignored_arguments(owner: str, reason: str, **given: object) -> None:
    """Log, once per process and name, each argument in `given` that `owner` accepts for
    LiBai compatibility but does not use; pass only the ones the caller set away from
    their neutral default (so a user who never touched them reads nothing).

    `reason` says why ignoring it is safe, e.g. "torch.autocast picks the compute dtype".
    """
    for name in sorted(given):
        _log_ignored_once(owner, name, reason)


@functools.lru_cache(maxsize=None)
def _log_ignored_once(owner: str, name: str, reason: str) -> None:
    # The cache is what makes it "once": repeated layers (24 TransformerLayers) log one line.
    logging.getLogger("libai").info("%s ignores %s (accepted for LiBai compatibility): %s", owner, name, reason)


_HELD_KEY = ("held",)


def hold_log_records(name: str = "libai") -> None:
    """Keep the records of logger `name` from now on in memory, until `release_log_records`
    hands them to the handlers added meanwhile (a log file that could not exist yet)."""
    logger = logging.getLogger(name)
    if not _has_handler(logger, _HELD_KEY):
        # flushLevel above CRITICAL and a capacity no run reaches: nothing leaves early.
        held = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
        setattr(held, _HANDLER_KEY, _HELD_KEY)
        logger.addHandler(held)


def release_log_records(name: str = "libai") -> None:
    """Give the records kept since `hold_log_records` to the file handlers of logger `name`
    (the console has shown them already) and stop keeping."""
    logger = logging.getLogger(name)
    for held in [h for h in logger.handlers if getattr(h, _HANDLER_KEY, None) == _HELD_KEY]:
        logger.removeHandler(held)
        files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
        for record in held.buffer:
            for handler in files:
                if record.levelno >= handler.level:
                    handler.handle(record)
        held.close()
