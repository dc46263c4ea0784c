"""Where random augmentation draws its numbers, so that it does not depend on the layout.

A training sample's augmentation must depend only on (the run's seed, the sample's dataset
index, its epoch): not on the data-parallel rank, the number of ranks, the worker that loads
it or how many workers there are. Torch's global generator cannot give that (each worker
process has its own, seeded per rank and worker), so the train sampler yields each index as
a `SampleIndex`, an `int` that also carries its epoch and the loader's seed, and a dataset
wraps its random transforms in `augmentation_rng(index)`::

    def __getitem__(self, index):
        image = self.read(index)
        with augmentation_rng(index):
            image = self.transform(image)

Inside the block every random transform of `libai.data.vision` (and `libai.data.transforms`)
draws from a generator seeded from (seed, epoch, index). Outside any block, and for a plain
`int` index (a sampler that is not LiBai's), they draw from torch's global generator, as
torchvision's do.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from typing import Iterator, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["SampleIndex", "augmentation_rng", "seeded_rng", "current_generator"]

# Separate streams, so that a sample's augmentation and a batch's Mixup never share numbers.
SAMPLE_STREAM = 0
MIXUP_STREAM = 1

_CURRENT: contextvars.ContextVar[Optional[torch.Generator]] = contextvars.ContextVar(
    "libai_augmentation_generator", default=None
)


class SampleIndex(int):
    """A dataset index that also knows the epoch it is drawn in and the loader's seed.

    It is an `int` everywhere (indexing, arithmetic, comparison, JSON), so datasets that
    ignore the extra fields work unchanged. Subtracting an int keeps the fields, so the
    index that `ConcatDataset` passes to one of its parts is still seeded (by the part's
    own index).
    """

    epoch: int
    seed: int

    def __new__(cls, value: int, epoch: int = 0, seed: int = 0) -> "SampleIndex":
        index = super().__new__(cls, value)
        index.epoch = int(epoch)
        index.seed = int(seed)
        return index

    def __sub__(self, other: object) -> object:
        result = int.__sub__(self, other)
        if result is NotImplemented:
            return result
        return SampleIndex(result, self.epoch, self.seed)

    def __reduce__(self) -> tuple:
        # Indices travel to DataLoader workers by pickle.
        return (SampleIndex, (int(self), self.epoch, self.seed))

    def __repr__(self) -> str:
        return f"SampleIndex({int(self)}, epoch={self.epoch}, seed={self.seed})"


def _generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from the integers in `key` (mixed by numpy's SeedSequence,
    so nearby keys give unrelated streams)."""
    entropy = [int(k) & 0xFFFF_FFFF_FFFF_FFFF for k in key]
    seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def seeded_rng(*key: int) -> Iterator[torch.Generator]:
    """Make random transforms draw from a generator seeded from `key` inside the block."""
    token = _CURRENT.set(_generator(*key))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def augmentation_rng(index: int) -> Iterator[Optional[torch.Generator]]:
    """Seed the random transforms applied inside the block from (seed, epoch, index).

    `index` is the index a dataset's `__getitem__` received. A `SampleIndex` (what LiBai's
    samplers yield) carries the epoch and the loader's seed; a plain `int` does not, and
    then the transforms draw from torch's global generator as they would without the block
    (logged once, since the augmentation then depends on the rank and worker).
    """
    if not isinstance(index, SampleIndex):
        _log_unseeded(type(index).__name__)
        yield None
        return
    with seeded_rng(index.seed, SAMPLE_STREAM, index.epoch, int(index)) as generator:
        yield generator


@functools.lru_cache(maxsize=None)
def _log_unseeded(kind: str) -> None:
    logger.warning(
        "augmentation_rng got a plain %s index (not a SampleIndex from LiBai's samplers): random "
        "augmentation draws from torch's global generator and depends on the rank and worker", kind
    )


def current_generator() -> Optional[torch.Generator]:
    """The generator of the innermost `augmentation_rng`/`seeded_rng` block, or None
    (torch's global generator) outside any."""
    return _CURRENT.get()


# ---- draws: every random transform uses these, so one switch seeds them all ----------


def rand() -> float:
    """A uniform float in [0, 1)."""
    return float(torch.rand(1, generator=current_generator()))


def uniform(low: float, high: float) -> float:
    """A uniform float in [low, high)."""
    return low + (high - low) * rand()


def randint(low: int, high: int) -> int:
    """A uniform integer in [low, high) (torch's convention: `high` excluded)."""
    return int(torch.randint(int(low), int(high), (1,), generator=current_generator()))


def gauss(mean: float, std: float) -> float:
    """A normal float with the given mean and standard deviation."""
    return mean + std * float(torch.randn(1, generator=current_generator()))


def normal(shape: tuple, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU tensor of standard normal values."""
    return torch.randn(shape, generator=current_generator(), dtype=dtype)


def choices(count: int, k: int) -> list[int]:
    """`k` integers in [0, count), drawn with replacement."""
    return torch.randint(0, int(count), (int(k),), generator=current_generator()).tolist()


def beta(alpha: float) -> float:
    """A Beta(alpha, alpha) sample (torch's Beta takes no generator: numpy draws it, seeded
    from the current generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=current_generator()))
    return float(np.random.default_rng(seed).beta(alpha, alpha))
