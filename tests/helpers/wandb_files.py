"""Read what an offline Weights & Biases run wrote, without W&B's servers or `wandb sync`.

A run's `run-<id>.wandb` file is a LevelDB-style log: a 7-byte header (":W&B", a magic
number, a version), then 32 KiB blocks of chunks, each with a 7-byte header (CRC32,
length, type: 1 full, 2 first, 3 middle, 4 last) before a piece of a serialized
`wandb.proto.wandb_internal_pb2.Record`. A block's last < 7 bytes are padding.
"""
import glob
import json
import os
import struct
import time

_BLOCK = 32 * 1024
_HEADER = struct.Struct("<IHB")
_FULL, _LAST = 1, 4


def _payloads(path: str):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pieces = 7, []
    while pos + _HEADER.size <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER.size:
            pos += room
            continue
        _crc, length, kind = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        pieces.append(data[pos : pos + length])
        pos += length
        if kind in (_FULL, _LAST):
            yield b"".join(pieces)
            pieces = []


def offline_runs(wandb_dir: str, timeout: float = 60.0) -> list:
    """The `run-*.wandb` files of the offline runs under `wandb_dir`, oldest first, once
    each holds its exit record (W&B's own service process may finish writing a moment
    after the training process has returned)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = sorted(glob.glob(os.path.join(wandb_dir, "offline-run-*", "run-*.wandb")))
        if all(_finished(path) for path in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def _finished(path: str) -> bool:
    try:
        return read_run(path)["finished"]
    except (AssertionError, OSError):  # not written yet
        return False


def read_run(path: str) -> dict:
    """{"history": [{key: value, "_step": ...}, ...], "config": {...}, "run_id": str,
    "finished": whether the exit record is there} of a run file."""
    from wandb.proto import wandb_internal_pb2

    history, config, run_id, finished = [], {}, None, False
    for payload in _payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "run":
            run_id = record.run.run_id
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "exit":
            finished = True
    return {"history": history, "config": config, "run_id": run_id, "finished": finished}
