"""Batch samplers whose global batch k is the same set of samples under every layout.

The data is one endless stream of positions 0, 1, 2, ...: position ``p`` belongs to epoch
``p // N`` and reads dataset index ``order(epoch)[p % N]``, where ``order(epoch)`` is
``torch.randperm(N)`` from a generator seeded with ``seed + epoch`` (or ``arange(N)`` without
shuffling). A step covers the ``micro_batch_size * data_parallel_size`` positions starting at
``consumed_samples``, and data-parallel rank ``r`` takes the ``r``-th run of
``micro_batch_size`` of them.

So the samples of global batch k depend only on (seed, N, global batch size), never on how the
global batch is divided among data-parallel ranks and micro-batches; this is what makes a run on
one process and on many train the same model, and resume exact under a different layout.
Each index is yielded as a `SampleIndex` (an `int` carrying its epoch and the sampler's seed),
which is what lets `libai.data.vision.augmentation_rng` seed a sample's augmentation from
(seed, index, epoch) alone, in any worker process.
LiBai's samplers give each rank its own contiguous bucket instead, which ties the batches to
the data-parallel size; the constructor arguments and ``consumed_samples`` semantics are LiBai's.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterator, Sized

import torch

from libai.data.errors import DataError
from libai.data.vision.rng import SampleIndex


def _check_args(
    dataset: Sized, micro_batch_size: int, data_parallel_rank: int, data_parallel_size: int
) -> int:
    """Validate the common sampler arguments; return the dataset size."""
    num_samples = len(dataset)
    if num_samples <= 0:
        raise DataError("the sampler got an empty dataset: check the dataset's path and filters")
    if isinstance(micro_batch_size, bool) or not isinstance(micro_batch_size, numbers.Integral) or micro_batch_size <= 0:
        raise DataError(f"micro_batch_size must be positive (an integer >= 1), got {micro_batch_size!r}")
    if int(data_parallel_size) <= 0:
        raise DataError(f"data_parallel_size must be positive, got {data_parallel_size}")
    if not 0 <= int(data_parallel_rank) < int(data_parallel_size):
        raise DataError(
            f"data_parallel_rank={data_parallel_rank} is outside [0, {int(data_parallel_size) - 1}] "
            f"for data_parallel_size={data_parallel_size}"
        )
    return num_samples


class _SampleStream:
    """Maps stream positions to dataset indices (see the module docstring)."""

    def __init__(self, num_samples: int, shuffle: bool, seed: int) -> None:
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = int(seed)
        # Batches that straddle an epoch boundary touch two epochs; keeping the last two
        # orders avoids regenerating a permutation for every batch.
        self._cache: dict[int, torch.Tensor] = {}

    def order(self, epoch: int) -> torch.Tensor:
        """The index order of `epoch`: a permutation seeded with seed + epoch, or arange."""
        if epoch not in self._cache:
            if self.shuffle:
                generator = torch.Generator()
                generator.manual_seed(self.seed + epoch)
                order = torch.randperm(self.num_samples, generator=generator)
            else:
                order = torch.arange(self.num_samples)
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = order
        return self._cache[epoch]

    def indices(self, start: int, count: int) -> list[SampleIndex]:
        """Dataset indices of positions [start, start + count), each knowing its epoch."""
        out: list[SampleIndex] = []
        position, end = start, start + count
        while position < end:
            epoch, offset = divmod(position, self.num_samples)
            take = min(end - position, self.num_samples - offset)
            out.extend(SampleIndex(i, epoch, self.seed) for i in self.order(epoch)[offset : offset + take].tolist())
            position += take
        return out


class CyclicSampler:
    """An endless batch sampler for training: yields this rank's list of sample indices per step.

    Step ``s`` (counting from ``consumed_samples``) covers stream positions
    ``[c, c + micro_batch_size * data_parallel_size)`` with ``c = consumed_samples``; this rank
    takes ``[c + rank * mbs, c + (rank + 1) * mbs)``. Each yielded batch advances
    ``consumed_samples`` by ``mbs * dp``, so a sampler built with the ``consumed_samples`` of a
    checkpoint continues exactly where the run stopped.

    Batches may span an epoch boundary (the tail of one epoch's order followed by the head of
    the next): that is on purpose, so every sample is seen once per epoch and no sample is
    dropped, whatever the global batch size. It never stops; the trainer decides when to end.
    Note that a DataLoader's workers prefetch batches, so ``consumed_samples`` on the sampler
    can run ahead of what the trainer has consumed: the trainer keeps its own count.
    """

    def __init__(
        self,
        dataset: Sized,
        micro_batch_size: int,
        shuffle: bool = False,
        consumed_samples: int = 0,
        data_parallel_rank: int = 0,
        data_parallel_size: int = 1,
        seed: int = 0,
    ) -> None:
        self.data_size = _check_args(dataset, micro_batch_size, data_parallel_rank, data_parallel_size)
        if int(consumed_samples) < 0:
            raise DataError(f"consumed_samples must be >= 0, got {consumed_samples}")
        self.dataset = dataset
        self.micro_batch_size = int(micro_batch_size)
        self.shuffle = bool(shuffle)
        self.consumed_samples = int(consumed_samples)
        self.data_parallel_rank = int(data_parallel_rank)
        self.data_parallel_size = int(data_parallel_size)
        self.seed = int(seed)
        # Samples consumed per step by all data-parallel ranks together (LiBai's name).
        self.actual_batch_size = self.micro_batch_size * self.data_parallel_size
        self._stream = _SampleStream(self.data_size, self.shuffle, self.seed)

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            start = self.consumed_samples + self.data_parallel_rank * self.micro_batch_size
            batch = self._stream.indices(start, self.micro_batch_size)
            self.consumed_samples += self.actual_batch_size
            yield batch

    def __len__(self) -> int:
        """Full steps per epoch (for information; the sampler itself never ends)."""
        return self.data_size // self.actual_batch_size


class SingleRoundSampler:
    """One pass over the dataset, for evaluation: yields this rank's list of indices per step.

    Uses the same stream layout as `CyclicSampler` starting at position 0, for
    ``ceil(N / (mbs * dp))`` steps (``floor`` with ``drop_last=True``). Positions ``p >= N`` at
    the end are padding: they read ``order[p % N]`` so every rank yields full batches of equal
    shape (collectives need that); the evaluator drops the padding, which is the last
    ``steps * mbs * dp - N`` samples of the pass in data-parallel rank order.
    """

    def __init__(
        self,
        dataset: Sized,
        micro_batch_size: int,
        shuffle: bool = False,
        data_parallel_rank: int = 0,
        data_parallel_size: int = 1,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.data_size = _check_args(dataset, micro_batch_size, data_parallel_rank, data_parallel_size)
        self.dataset = dataset
        self.micro_batch_size = int(micro_batch_size)
        self.shuffle = bool(shuffle)
        self.data_parallel_rank = int(data_parallel_rank)
        self.data_parallel_size = int(data_parallel_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.actual_batch_size = self.micro_batch_size * self.data_parallel_size
        self._stream = _SampleStream(self.data_size, self.shuffle, self.seed)

    def __len__(self) -> int:
        """Number of steps (batches per rank)."""
        if self.drop_last:
            return self.data_size // self.actual_batch_size
        return math.ceil(self.data_size / self.actual_batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._stream.order(0).tolist()
        for step in range(len(self)):
            start = step * self.actual_batch_size + self.data_parallel_rank * self.micro_batch_size
            positions = range(start, start + self.micro_batch_size)
            # Padding positions wrap around into the same epoch's order.
            yield [SampleIndex(order[p % self.data_size], 0, self.seed) for p in positions]
