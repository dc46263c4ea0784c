"""Loader builders with LiBai's names and arguments.

Train loaders use `CyclicSampler` (endless, shuffled, resumable from `consumed_samples`);
test loaders use `SingleRoundSampler` (one pass, padded to equal batches on every
data-parallel rank). `train_batch_size` / `test_batch_size` are micro-batch sizes: the
samples one data-parallel rank reads per step. The default collate is `Instance.stack`.

Random augmentation does not depend on the layout: the samplers yield `SampleIndex`es that
carry (seed, epoch), and a dataset that applies its transforms inside
`libai.data.vision.augmentation_rng(index)` gets the same augmented sample under any number
of data-parallel ranks or workers. A seeded `mixup_func` (`libai.data.vision.data.Mixup`) is
seeded per micro-batch by the image train loader (see `build_image_train_loader`).
"""
from __future__ import annotations

import logging
import numbers
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from omegaconf import ListConfig
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from libai.data.errors import DataError
from libai.data.samplers import CyclicSampler, SingleRoundSampler
from libai.data.structures import Instance

logger = logging.getLogger(__name__)

__all__ = [
    "build_nlp_train_loader",
    "build_nlp_test_loader",
    "build_nlp_train_val_test_loader",
    "train_valid_test_ranges",
    "build_image_train_loader",
    "build_image_test_loader",
]


def _mix_datasets(dataset: Any, dataset_mixer: Callable[[list], Dataset]) -> Dataset:
    """One dataset from `dataset` (a dataset, or a list of them mixed by `dataset_mixer`)."""
    if isinstance(dataset, (list, tuple, ListConfig)):
        datasets = list(dataset)
        if not datasets:
            raise DataError("the loader got an empty list of datasets: give at least one dataset")
        return datasets[0] if len(datasets) == 1 else dataset_mixer(datasets)
    if dataset is None:
        raise DataError("the loader got dataset=None: set dataloader.train.dataset in the config")
    return dataset


def _check_batch_size(name: str, value: Any, trainer_key: str) -> int:
    """`value` as an int >= 1, or a `DataError` naming the argument and the trainer key
    it comes from (`DefaultTrainer` sets it from `trainer_key`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise DataError(f"{name} must be an integer >= 1, got {value!r}: the trainer sets it from {trainer_key}")
    return int(value)


def _check_enough_samples(dataset: Dataset, micro_batch_size: int, dp_size: int) -> None:
    """One training step reads `micro_batch_size x dp_size` distinct samples: refuse less
    data than that (a batch would hold the same sample twice), and an empty dataset."""
    size, step = len(dataset), micro_batch_size * dp_size
    if size == 0:
        raise DataError("the training dataset is empty (0 samples): check the dataset's files, path and filters")
    if size < step:
        raise DataError(
            f"the training dataset has {size} samples, fewer than one step reads: train_micro_batch_size "
            f"({micro_batch_size}) x data-parallel ranks ({dp_size}) = {step}; use more data or a smaller batch"
        )


def _dp_rank_and_size() -> tuple[int, int]:
    # Imported here so that building the data structures does not need a process group.
    from libai.utils.distributed import get_data_parallel_rank, get_data_parallel_size

    return get_data_parallel_rank(), get_data_parallel_size()


def _warn_unused(builder: str, kwargs: dict) -> None:
    # LiBai accepts extra keys silently; say which ones are ignored so typos are visible.
    if kwargs:
        logger.warning("%s ignores the arguments %s", builder, sorted(kwargs))


class ImageTrainLoader(DataLoader):
    """The image train loader: a DataLoader that seeds its `mixup_func` per micro-batch.

    LiBai binds `mixup_func` to the loader and the trainer applies it to each batch
    (`DefaultTrainer.get_batch`). Before handing out a batch, this loader calls
    ``mixup_func.seed_next_batch(mixup_seed, position)`` when the function has that method
    (`libai.data.vision.data.Mixup` does), so the trainer's next call mixes with numbers
    drawn from (seed, position). ``position`` is the stream position of the batch's first
    sample (`CyclicSampler`: ``consumed_samples + data_parallel_rank * micro_batch_size`` at
    the step; for another sampler, the count of batches drawn in this pass). It does not
    depend on the number of workers and is restored on resume. The trainer must apply the
    function to each batch before it draws the next, as `DefaultTrainer` does.
    """

    mixup_func: Optional[Callable] = None
    mixup_seed: int = 0

    def __iter__(self) -> Iterator[Any]:
        mixup = self.mixup_func
        if not hasattr(mixup, "seed_next_batch"):
            return super().__iter__()
        sampler = self.batch_sampler
        start = stride = None
        if isinstance(sampler, CyclicSampler):
            # Read before the DataLoader iterator starts: its prefetching advances the sampler.
            start = sampler.consumed_samples + sampler.data_parallel_rank * sampler.micro_batch_size
            stride = sampler.actual_batch_size
        return self._seeding_mixup(super().__iter__(), mixup, start, stride)

    def _seeding_mixup(self, batches: Iterator[Any], mixup: Any, start: Optional[int], stride: Optional[int]) -> Iterator[Any]:
        for step, batch in enumerate(batches):
            position = step if start is None or stride is None else start + step * stride
            mixup.seed_next_batch(self.mixup_seed, position)
            yield batch


def _make_loader(
    dataset: Dataset,
    batch_sampler: Any,
    num_workers: int,
    collate_fn: Optional[Callable],
    seed: int,
    loader_class: type = DataLoader,
) -> DataLoader:
    """A `loader_class` (a DataLoader) over `batch_sampler` with Instance.stack as default collate."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
        raise DataError(f"num_workers must be >= 0 (an integer), got {num_workers!r}: set the loader's num_workers")
    from libai.utils.distributed import get_rank

    # Worker RNG seeds come from this generator, so draws outside `augmentation_rng` (which
    # seeds per sample, independently of rank and worker) are reproducible for a seed and rank.
    generator = torch.Generator()
    generator.manual_seed(int(seed) + get_rank())
    return loader_class(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=int(num_workers),
        collate_fn=collate_fn if collate_fn is not None else Instance.stack,
        # Workers outlive one pass: the train sampler never ends and the test loader is
        # iterated once per evaluation.
        persistent_workers=int(num_workers) > 0,
        generator=generator,
    )


def _train_loader(
    dataset: Any,
    train_batch_size: int,
    sampler: Any,
    num_workers: int,
    consumed_samples: int,
    seed: int,
    collate_fn: Optional[Callable],
    dataset_mixer: Callable,
    loader_class: type = DataLoader,
) -> DataLoader:
    dataset = _mix_datasets(dataset, dataset_mixer)
    if sampler is None:
        train_batch_size = _check_batch_size("train_batch_size", train_batch_size, "train.train_micro_batch_size")
        dp_rank, dp_size = _dp_rank_and_size()
        _check_enough_samples(dataset, train_batch_size, dp_size)
        sampler = CyclicSampler(
            dataset=dataset,
            micro_batch_size=train_batch_size,
            shuffle=True,
            consumed_samples=consumed_samples,
            data_parallel_rank=dp_rank,
            data_parallel_size=dp_size,
            seed=seed,
        )
    return _make_loader(dataset, sampler, num_workers, collate_fn, seed, loader_class)


def _test_loader(
    dataset: Any,
    test_batch_size: int,
    sampler: Any,
    num_workers: int,
    seed: int,
    collate_fn: Optional[Callable],
) -> DataLoader:
    dataset = _mix_datasets(dataset, ConcatDataset)
    if sampler is None:
        test_batch_size = _check_batch_size("test_batch_size", test_batch_size, "train.test_micro_batch_size")
        dp_rank, dp_size = _dp_rank_and_size()
        sampler = SingleRoundSampler(
            dataset=dataset,
            micro_batch_size=test_batch_size,
            shuffle=False,
            data_parallel_rank=dp_rank,
            data_parallel_size=dp_size,
            seed=seed,
            drop_last=False,
        )
    return _make_loader(dataset, sampler, num_workers, collate_fn, seed)


def build_nlp_train_loader(
    dataset: Dataset | Sequence[Dataset],
    train_batch_size: int,
    test_batch_size: Optional[int] = None,
    sampler: Any = None,
    num_workers: int = 4,
    consumed_samples: int = 0,
    seed: int = 0,
    collate_fn: Optional[Callable] = None,
    dataset_mixer: Callable = ConcatDataset,
    **kwargs,
) -> tuple[DataLoader, None, None]:
    """Train loader for NLP datasets: `(train_loader, None, None)` as in LiBai.

    `train_batch_size` is the micro-batch size per data-parallel rank; `test_batch_size` is
    accepted for compatibility and unused. The loader's `batch_sampler` is the sampler.
    """
    _warn_unused("build_nlp_train_loader", kwargs)
    loader = _train_loader(
        dataset, train_batch_size, sampler, num_workers, consumed_samples, seed, collate_fn, dataset_mixer
    )
    return loader, None, None


def build_nlp_test_loader(
    dataset: Dataset | Sequence[Dataset],
    test_batch_size: int,
    sampler: Any = None,
    num_workers: int = 4,
    seed: int = 0,
    collate_fn: Optional[Callable] = None,
) -> DataLoader:
    """One-pass test loader for NLP datasets (`SingleRoundSampler` over the data-parallel ranks)."""
    return _test_loader(dataset, test_batch_size, sampler, num_workers, seed, collate_fn)


def build_image_train_loader(
    dataset: Dataset | Sequence[Dataset],
    train_batch_size: int,
    test_batch_size: Optional[int] = None,
    sampler: Any = None,
    num_workers: int = 4,
    consumed_samples: int = 0,
    seed: int = 0,
    collate_fn: Optional[Callable] = None,
    dataset_mixer: Callable = ConcatDataset,
    mixup_func: Optional[Callable] = None,
    **kwargs,
) -> tuple[DataLoader, None, None]:
    """Train loader for image datasets: `(train_loader, None, None)` as in LiBai.

    `mixup_func`, if given, is attached as `loader.mixup_func` for the trainer to apply to
    each batch (`DefaultTrainer.get_batch`), as in LiBai. A `libai.data.vision.data.Mixup`
    is seeded per micro-batch from `seed` and the stream position of the micro-batch's first
    sample (see `ImageTrainLoader`), so a run mixes the same way at any number of workers and
    on resume. Each rank mixes its own micro-batch (a sample's partner is its mirror in that
    micro-batch, as in LiBai), so the mix depends on how the global batch is cut into
    micro-batches: a run with data_parallel_size 2 mixes exactly as one process with the same
    micro-batch size and 2 accumulation steps, not as one process with micro-batches twice as
    large. Each sample's augmentation before mixing is the same under every layout (see
    `libai.data.vision.augmentation_rng`).
    """
    _warn_unused("build_image_train_loader", kwargs)
    loader = _train_loader(
        dataset, train_batch_size, sampler, num_workers, consumed_samples, seed, collate_fn, dataset_mixer,
        loader_class=ImageTrainLoader,
    )
    loader.mixup_func = mixup_func
    loader.mixup_seed = int(seed)
    return loader, None, None


def build_image_test_loader(
    dataset: Dataset | Sequence[Dataset],
    test_batch_size: int,
    sampler: Any = None,
    num_workers: int = 4,
    seed: int = 0,
    collate_fn: Optional[Callable] = None,
    **kwargs,
) -> DataLoader:
    """One-pass test loader for image datasets (`SingleRoundSampler` over the data-parallel ranks)."""
    _warn_unused("build_image_test_loader", kwargs)
    return _test_loader(dataset, test_batch_size, sampler, num_workers, seed, collate_fn)


def _normalize_split(split: Sequence[float]) -> list[float]:
    """One dataset's train/valid/test weights as three fractions summing to 1."""
    weights = [float(w) for w in split]
    if not 1 <= len(weights) <= 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DataError(
            f"a split must be up to 3 non-negative weights for train/valid/test with a positive sum, "
            f"like [949, 50, 1]; got {list(split)}"
        )
    weights += [0.0] * (3 - len(weights))
    return [w / sum(weights) for w in weights]


def train_valid_test_ranges(size: int, split: Sequence[float]) -> tuple[range, range, range]:
    """Contiguous, disjoint train/valid/test index ranges covering `range(size)`.

    Megatron-LM's rounding: each boundary advances by `round(fraction * size)`, then all
    boundaries shift so the last one is exactly `size`.
    """
    fractions = _normalize_split(split)
    bounds = [0]
    for fraction in fractions:
        bounds.append(bounds[-1] + int(round(fraction * size)))
    excess = bounds[-1] - size
    # Clamping keeps the ranges ordered when the shift would push a boundary below 0.
    bounds = [0] + [min(max(b - excess, 0), size) for b in bounds[1:]]
    for i in range(1, 4):
        bounds[i] = max(bounds[i], bounds[i - 1])
    return range(bounds[0], bounds[1]), range(bounds[1], bounds[2]), range(bounds[2], bounds[3])


def _splits_per_dataset(splits: Any, num_datasets: int) -> list[list[float]]:
    """One split per dataset; a single split (or a flat `[949, 50, 1]`) applies to all."""
    splits = [list(s) if isinstance(s, (list, tuple, ListConfig)) else s for s in (splits or [])]
    if splits and not isinstance(splits[0], list):
        splits = [splits]
    if len(splits) == 1:
        splits = splits * num_datasets
    if len(splits) != num_datasets:
        raise DataError(
            f"splits has {len(splits)} entries for {num_datasets} datasets: give one [train, valid, test] per dataset"
        )
    return splits


def build_nlp_train_val_test_loader(
    dataset: Dataset | Sequence[Dataset],
    splits: Sequence[Sequence[float]],
    weights: Optional[Sequence[float]] = None,
    train_val_test_num_samples: Optional[Sequence[int]] = None,
    train_batch_size: int = 1,
    test_batch_size: Optional[int] = None,
    sampler: Any = None,
    num_workers: int = 4,
    consumed_samples: int = 0,
    seed: int = 0,
    collate_fn: Optional[Callable] = None,
    dataset_mixer: Callable = ConcatDataset,
    **kwargs,
) -> tuple[DataLoader, Optional[DataLoader], Optional[DataLoader]]:
    """Split each dataset into train/valid/test index ranges and build `(train, valid, test)` loaders.

    `splits` holds one `[train, valid, test]` weight triple per dataset (e.g.
    `[[949, 50, 1]]`, normalised; one triple applies to every dataset); the ranges are
    contiguous, disjoint and cover each dataset (`train_valid_test_ranges`). Train parts are
    mixed with `dataset_mixer` and read by the endless, resumable train sampler (or
    `sampler`); valid and test parts are concatenated and read once per evaluation with
    `test_batch_size` (default `train_batch_size`). A loader whose split is empty is None.
    `weights` and `train_val_test_num_samples` are accepted for LiBai compatibility: mixing
    is by `dataset_mixer` (ConcatDataset: in proportion to dataset sizes) and dataset lengths
    come from each dataset's `max_num_samples`.
    """
    _warn_unused("build_nlp_train_val_test_loader", kwargs)
    datasets = list(dataset) if isinstance(dataset, (list, tuple, ListConfig)) else [dataset]
    if not datasets or any(d is None for d in datasets):
        raise DataError("build_nlp_train_val_test_loader got no dataset: set dataloader.train.dataset in the config")
    if weights is not None and len(weights) != len(datasets):
        raise DataError(
            f"weights has {len(weights)} entries for {len(datasets)} datasets: give one weight per dataset"
        )
    if weights is not None and len(set(float(w) for w in weights)) > 1:
        logger.warning(
            "build_nlp_train_val_test_loader ignores weights %s: datasets are mixed by dataset_mixer", list(weights)
        )
    if train_val_test_num_samples is not None:
        logger.warning(
            "build_nlp_train_val_test_loader ignores train_val_test_num_samples: "
            "set max_num_samples on the datasets"
        )

    parts: list[list[Dataset]] = [[], [], []]
    for ds, split in zip(datasets, _splits_per_dataset(splits, len(datasets))):
        for bucket, indices in zip(parts, train_valid_test_ranges(len(ds), split)):
            if len(indices) > 0:
                bucket.append(Subset(ds, indices))
    if not parts[0]:
        raise DataError(f"splits {list(splits)} leave no training samples: give the train part a positive weight")
    train_loader = _train_loader(
        parts[0], train_batch_size, sampler, num_workers, consumed_samples, seed, collate_fn, dataset_mixer
    )
    test_batch_size = train_batch_size if test_batch_size is None else test_batch_size
    valid_loader, test_loader = (
        _named(_test_loader(part, test_batch_size, None, num_workers, seed, collate_fn), name) if part else None
        for part, name in zip(parts[1:], ("validation", "test"))
    )
    return train_loader, valid_loader, test_loader


def _named(loader: DataLoader, name: str) -> DataLoader:
    """Give a split's loader the dataset name its evaluation results are keyed by
    ("validation/PPL"), unless its dataset already has one."""
    if getattr(loader.dataset, "dataset_name", None) is None:
        loader.dataset.dataset_name = name
    return loader
