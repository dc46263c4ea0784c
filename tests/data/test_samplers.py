"""CyclicSampler / SingleRoundSampler: global batch k is a fixed slice of the sample stream."""
import itertools

import pytest
import torch

from libai.data.samplers import CyclicSampler, SingleRoundSampler

N = 30  # dataset size: not a multiple of any global batch below, so batches cross epochs


def _stream(n, count, seed, shuffle=True):
    """Reference: the first `count` positions of the stream, written out from the definition."""
    out = []
    for epoch in range(count // n + 1):
        if shuffle:
            g = torch.Generator()
            g.manual_seed(seed + epoch)
            out.extend(torch.randperm(n, generator=g).tolist())
        else:
            out.extend(range(n))
    return out[:count]


def _steps(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def _global_batches(mbs, dp, steps, shuffle=True, seed=7, consumed=0, n=N):
    """Per step, the concatenation of all dp ranks' batches in rank order."""
    per_rank = [
        _steps(CyclicSampler(range(n), mbs, shuffle, consumed, rank, dp, seed), steps) for rank in range(dp)
    ]
    for batches in per_rank:
        assert all(len(b) == mbs for b in batches)
    return [sum((per_rank[r][s] for r in range(dp)), []) for s in range(steps)]


def test_cyclic_matches_stream_definition():
    steps = 12  # 12 * 8 = 96 positions: 3.2 epochs
    batches = _global_batches(mbs=2, dp=4, steps=steps)
    assert sum(batches, []) == _stream(N, steps * 8, seed=7)


def test_cyclic_rank_shares_disjoint_and_covering():
    mbs, dp = 3, 2  # global batch 6 divides 30: no step crosses an epoch
    reference = _stream(N, 60, seed=1)
    per_rank = [_steps(CyclicSampler(range(N), mbs, True, 0, r, dp, 1), 10) for r in range(dp)]
    for step in range(10):
        shares = [set(per_rank[r][step]) for r in range(dp)]
        assert shares[0].isdisjoint(shares[1])
        assert shares[0] | shares[1] == set(reference[step * 6 : step * 6 + 6])
        assert len(shares[0]) == len(shares[1]) == 3


def test_global_batch_same_for_every_dp_size():
    # Same global batch (mbs * dp = 8) under dp = 1, 2, 4: identical samples, same order.
    layouts = [(8, 1), (4, 2), (2, 4)]
    results = [_global_batches(mbs, dp, steps=15) for mbs, dp in layouts]
    assert results[0] == results[1] == results[2]
    # ... and as sets per step, the thing the equivalence of losses needs.
    assert [set(b) for b in results[0]] == [set(b) for b in results[2]]


def test_every_epoch_is_a_permutation():
    flat = sum(_global_batches(mbs=5, dp=2, steps=9), [])  # 90 positions = 3 epochs
    for epoch in range(3):
        assert sorted(flat[epoch * N : (epoch + 1) * N]) == list(range(N))
    # Shuffling changes the order between epochs.
    assert flat[:N] != flat[N : 2 * N]


def test_shuffle_depends_only_on_seed_and_epoch():
    a = sum(_global_batches(6, 1, 10, seed=3), [])
    b = sum(_global_batches(3, 2, 10, seed=3), [])
    c = sum(_global_batches(6, 1, 10, seed=4), [])
    assert a == b
    assert a != c
    # Epoch e uses seed + e: epoch 1 of seed 3 is epoch 0 of seed 4.
    assert a[N : 2 * N] == c[:N]
    g = torch.Generator()
    g.manual_seed(3)
    assert a[:N] == torch.randperm(N, generator=g).tolist()
    # Global torch RNG state plays no part.
    torch.manual_seed(999)
    assert sum(_global_batches(6, 1, 10, seed=3), []) == a


def test_no_shuffle_is_sequential():
    assert sum(_global_batches(4, 2, 5, shuffle=False), []) == _stream(N, 40, 0, shuffle=False)


def test_resume_from_consumed_samples_is_exact():
    full = _global_batches(mbs=4, dp=2, steps=20)
    resumed = _global_batches(mbs=4, dp=2, steps=13, consumed=7 * 8)
    assert resumed == full[7:]
    # Resuming under another layout with the same global batch continues identically too.
    assert _global_batches(mbs=2, dp=4, steps=13, consumed=7 * 8) == full[7:]


def test_consumed_samples_and_len():
    sampler = CyclicSampler(range(N), 4, True, 8, 1, 2, 0)
    assert len(sampler) == N // 8 == 3
    assert sampler.actual_batch_size == 8
    _steps(sampler, 5)
    assert sampler.consumed_samples == 8 + 5 * 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dataset=[], micro_batch_size=2), "empty dataset"),
        (dict(dataset=range(4), micro_batch_size=0), "micro_batch_size must be positive"),
        (dict(dataset=range(4), micro_batch_size=1, data_parallel_rank=2, data_parallel_size=2), r"outside \[0, 1\]"),
        (dict(dataset=range(4), micro_batch_size=1, consumed_samples=-1), "consumed_samples must be >= 0"),
    ],
)
def test_cyclic_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CyclicSampler(**kwargs)


def _single_round(n, mbs, dp, shuffle=False, drop_last=False, seed=0):
    per_rank = [list(SingleRoundSampler(range(n), mbs, shuffle, r, dp, seed, drop_last)) for r in range(dp)]
    return per_rank


@pytest.mark.parametrize("shuffle", [False, True])
def test_single_round_covers_each_index_once_up_to_padding(shuffle):
    n, mbs, dp = 23, 3, 4  # 2 steps x 12 = 24 positions: 1 padding sample
    per_rank = _single_round(n, mbs, dp, shuffle=shuffle, seed=5)
    assert [len(batches) for batches in per_rank] == [2, 2, 2, 2]
    assert all(len(b) == mbs for batches in per_rank for b in batches)
    assert len(SingleRoundSampler(range(n), mbs, shuffle, 0, dp, 5)) == 2
    # Gathered in rank order per step, as the evaluator does, then trimmed to n.
    gathered = sum((per_rank[r][s] for s in range(2) for r in range(dp)), [])
    assert sorted(gathered[:n]) == list(range(n))
    order = _stream(n, n, seed=5, shuffle=shuffle)
    assert gathered[:n] == order
    assert gathered[n:] == order[:1]  # the padding wraps to the start of the order


def test_single_round_drop_last_and_small_dataset():
    per_rank = _single_round(23, 3, 4, drop_last=True)
    assert [len(b) for b in per_rank] == [1, 1, 1, 1]
    assert sum((per_rank[r][0] for r in range(4)), []) == list(range(12))
    # Fewer samples than one global batch: every rank still gets a full batch.
    per_rank = _single_round(3, 2, 2)
    assert per_rank == [[[0, 1]], [[2, 0]]]


def test_single_round_same_samples_for_every_dp_size():
    one = _single_round(50, 8, 1)
    four = _single_round(50, 2, 4)
    assert [sum((four[r][s] for r in range(4)), []) for s in range(7)] == one[0]
