"""Loader builders on 2 data-parallel ranks (one spawn for the whole module) and on one process."""
import itertools

import pytest
import torch
from torch.utils.data import ConcatDataset, Dataset

from libai.data import (
    CyclicSampler,
    DistTensorData,
    Instance,
    SingleRoundSampler,
    build_image_test_loader,
    build_image_train_loader,
    build_nlp_test_loader,
    build_nlp_train_loader,
)
from tests.helpers.dist import run_on_ranks


class IdDataset(Dataset):
    """Sample i holds its own global id (offset + i), so batches can be read back as indices."""

    def __init__(self, size, offset=0):
        self.size, self.offset = size, offset

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        ident = self.offset + i
        return Instance(
            input_ids=DistTensorData(torch.full((3,), ident, dtype=torch.long)),
            labels=DistTensorData(torch.tensor(ident), placement_idx=-1),
        )


def _ids(batch):
    return batch.labels.tensor.tolist()


def _take(loader, n):
    return list(itertools.islice(iter(loader), n))


def _mixup(batch):
    return batch


def _worker():
    from libai.data.datasets import MNISTDataset
    from libai.utils import distributed as dist_utils

    dist_utils.setup_dist_util({})
    rank = dist_utils.get_data_parallel_rank()
    out = {"dp": (rank, dist_utils.get_data_parallel_size())}

    # Image train loader over MNIST: shapes, dtypes, sampler wiring.
    train = MNISTDataset(train=True)
    loader, valid, test = build_image_train_loader(train, train_batch_size=4, num_workers=0, seed=3, mixup_func=_mixup)
    batch = next(iter(loader))
    out["image_train"] = dict(
        none=(valid, test),
        images=(tuple(batch.images.tensor.shape), str(batch.images.tensor.dtype), batch.images.placement_idx),
        labels=(tuple(batch.labels.tensor.shape), str(batch.labels.tensor.dtype), batch.labels.placement_idx),
        sampler=(type(loader.batch_sampler).__name__, loader.batch_sampler.data_parallel_rank,
                 loader.batch_sampler.data_parallel_size, loader.batch_sampler.shuffle),
        mixup=loader.mixup_func is _mixup,
        label_values=batch.labels.tensor.tolist(),
    )
    batch.images.to_global()
    out["to_global"] = (
        tuple(batch.images.tensor.shape),
        tuple(batch.images.tensor.to_local().shape),
        [str(p) for p in batch.images.tensor.placements],
    )

    # Image test loader: one padded pass; gathered over ranks and trimmed it is the test set.
    test_set = MNISTDataset(train=False)
    test_loader = build_image_test_loader(test_set, test_batch_size=64, num_workers=0)
    labels, shapes = [], set()
    for step_batch in test_loader:
        shapes.add(tuple(step_batch.images.tensor.shape))
        labels.append(dist_utils.gather_data_parallel(step_batch.labels.tensor))
    out["image_test"] = dict(
        steps=len(labels), loader_len=len(test_loader), shapes=sorted(shapes),
        trimmed_equal=torch.cat(labels)[: len(test_set)].tolist() == test_set.labels.tolist(),
    )

    # NLP train loader over a list of two datasets, with resume and with a worker process.
    datasets = [IdDataset(20), IdDataset(13, offset=20)]
    nlp, _, _ = build_nlp_train_loader(datasets, train_batch_size=4, num_workers=0, seed=11)
    out["nlp_len"] = len(nlp.dataset)
    out["nlp_ids"] = [_ids(b) for b in _take(nlp, 10)]
    out["nlp_shape"] = tuple(next(iter(nlp)).input_ids.tensor.shape)
    resumed, _, _ = build_nlp_train_loader(datasets, train_batch_size=4, num_workers=0, seed=11, consumed_samples=3 * 8)
    out["nlp_resumed_ids"] = [_ids(b) for b in _take(resumed, 7)]
    workers, _, _ = build_nlp_train_loader(datasets, train_batch_size=4, num_workers=1, seed=11)
    out["nlp_worker_ids"] = [_ids(b) for b in _take(workers, 10)]
    out["persistent"] = workers.persistent_workers

    nlp_test = build_nlp_test_loader(IdDataset(9), test_batch_size=2, num_workers=0)
    out["nlp_test_ids"] = [_ids(b) for b in nlp_test]
    return out


@pytest.fixture(scope="module")
def two_ranks():
    return run_on_ranks(_worker, 2)


def test_ranks_and_image_train_loader(two_ranks):
    for rank, out in enumerate(two_ranks):
        assert out["dp"] == (rank, 2)
        info = out["image_train"]
        assert info["none"] == (None, None)
        assert info["images"] == ((4, 1, 28, 28), "torch.float32", 0)
        assert info["labels"] == ((4,), "torch.int64", -1)
        assert info["sampler"] == ("CyclicSampler", rank, 2, True)
        assert info["mixup"] is True
        # Each dp rank's 4 images are its shard of a global batch of 8.
        assert out["to_global"] == ((8, 1, 28, 28), (4, 1, 28, 28), ["S(0)", "R"])
    # The two ranks' first batches together are global batch 0 of a one-rank sampler (mbs 8).
    from libai.data.datasets import MNISTDataset

    train = MNISTDataset(train=True)
    indices = next(iter(CyclicSampler(train, 8, shuffle=True, seed=3)))
    assert two_ranks[0]["image_train"]["label_values"] + two_ranks[1]["image_train"]["label_values"] == [
        int(train.labels[i]) for i in indices
    ]


def test_image_test_loader_covers_test_set_once(two_ranks):
    for out in two_ranks:
        info = out["image_test"]
        assert info["steps"] == info["loader_len"] == 8  # ceil(1000 / (64 * 2))
        assert info["shapes"] == [(64, 1, 28, 28)]
        assert info["trimmed_equal"] is True


def test_nlp_train_loader_global_batches_and_resume(two_ranks):
    first, second = two_ranks
    assert first["nlp_len"] == 33 and first["nlp_shape"] == (4, 3)
    global_batches = [a + b for a, b in zip(first["nlp_ids"], second["nlp_ids"])]
    # Same as one rank with the same global batch (ids == indices into the concatenation).
    reference = list(itertools.islice(iter(CyclicSampler(range(33), 8, shuffle=True, seed=11)), 10))
    assert global_batches == reference
    for epoch in range(2):  # 80 positions: each of the first two epochs is a permutation of 0..32
        assert sorted(sum(global_batches, [])[epoch * 33 : (epoch + 1) * 33]) == list(range(33))
    for out in two_ranks:
        assert out["nlp_resumed_ids"] == out["nlp_ids"][3:]
        assert out["nlp_worker_ids"] == out["nlp_ids"]
        assert out["persistent"] is True


def test_nlp_test_loader_pads_equal_batches(two_ranks):
    first, second = two_ranks
    assert first["nlp_test_ids"] == [[0, 1], [4, 5], [8, 0]]
    assert second["nlp_test_ids"] == [[2, 3], [6, 7], [1, 2]]


# ---- one process, explicit samplers (no process group needed) ----


def test_explicit_sampler_collate_and_mixer():
    sampler = SingleRoundSampler(range(5), 2)
    loader = build_nlp_test_loader(IdDataset(5), 2, sampler=sampler, num_workers=0, collate_fn=lambda b: len(b))
    assert loader.batch_sampler is sampler
    assert list(loader) == [2, 2, 2]
    mixed = []
    loader, _, _ = build_image_train_loader(
        [IdDataset(2), IdDataset(2, offset=2)],
        train_batch_size=4,
        sampler=CyclicSampler(range(4), 4),
        num_workers=0,
        dataset_mixer=lambda ds: mixed.append(len(ds)) or ConcatDataset(ds),
    )
    assert mixed == [2] and loader.mixup_func is None
    assert _ids(next(iter(loader))) == [0, 1, 2, 3]


def test_loader_argument_errors():
    with pytest.raises(ValueError, match="empty list of datasets"):
        build_nlp_test_loader([], 2, sampler=SingleRoundSampler(range(1), 1))
    with pytest.raises(ValueError, match="dataset=None"):
        build_nlp_train_loader(None, 2, sampler=CyclicSampler(range(1), 1))
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        build_nlp_test_loader(IdDataset(2), 2, sampler=SingleRoundSampler(range(2), 1), num_workers=-1)
