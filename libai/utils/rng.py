"""The random number generators a training step draws from, saved and restored per rank.

Dropout, random masking and sampling draw from Python's `random`, NumPy's global generator
and torch's default generators (CPU and, when present, the current CUDA device). A run
resumed from a checkpoint continues bit for bit only if each rank gets back the states its
generators had when the checkpoint was written: `RNGStates` is the checkpointable that does
it, and `preserved_rng_states` keeps code that should not advance them (evaluation) from
doing so.
"""
from __future__ import annotations

import base64
import json
import logging
import random
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as torch_dist

logger = logging.getLogger(__name__)

__all__ = ["RNGStates", "get_rng_states", "set_rng_states", "preserved_rng_states"]


def get_rng_states() -> dict[str, Any]:
    """This process's generator states as JSON-able values (tensors as base64 bytes)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": _encode_python_state(random.getstate()),
        "numpy": [kind, _b64(np.asarray(keys, dtype=np.uint32).tobytes()), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = _b64(torch.cuda.get_rng_state().numpy().tobytes())
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what `get_rng_states` returned."""
    random.setstate(_decode_python_state(states["python"]))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.frombuffer(_unb64(keys), dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_byte_tensor(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(_byte_tensor(states["cuda"]))


@contextmanager
def preserved_rng_states() -> Iterator[None]:
    """Run the block, then restore every generator: the block draws without advancing them."""
    states = get_rng_states()
    try:
        yield
    finally:
        set_rng_states(states)


class RNGStates:
    """A checkpointable (`state_dict`/`load_state_dict`) holding every rank's generator states.

    Collective: both methods gather over all ranks, so the saved value is the same on every
    rank (a checkpoint keeps one copy of replicated values) and each rank restores its own
    entry. A checkpoint written by another number of processes restores nothing (the
    ranks would not correspond) and says so: the run goes on, but not bit for bit.
    """

    def state_dict(self) -> dict[str, str]:
        """{"per_rank": JSON list of every rank's `get_rng_states()`}."""
        mine = get_rng_states()
        if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
            gathered: list = [None] * torch_dist.get_world_size()
            torch_dist.all_gather_object(gathered, mine)
        else:
            gathered = [mine]
        return {"per_rank": json.dumps(gathered)}

    def load_state_dict(self, state: dict[str, str]) -> None:
        """Restore this rank's entry of `state_dict()`."""
        per_rank = json.loads(state["per_rank"])
        rank = torch_dist.get_rank() if torch_dist.is_initialized() else 0
        world = torch_dist.get_world_size() if torch_dist.is_initialized() else 1
        if len(per_rank) != world:
            logger.warning(
                "The checkpoint holds the random states of %d processes, this run has %d: random "
                "states are not restored (dropout and sampling continue from this run's seed)",
                len(per_rank), world,
            )
            return
        set_rng_states(per_rank[rank])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _byte_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(_unb64(text)), dtype=torch.uint8)


def _encode_python_state(state: tuple) -> list:
    # (version, tuple of 625 ints, gauss_next): JSON keeps ints exactly.
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def _decode_python_state(state: list) -> tuple:
    version, internal, gauss_next = state
    return (version, tuple(internal), gauss_next)

