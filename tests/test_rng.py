"""Every rank's Python, NumPy and torch generator states survive a checkpoint."""
import json
import random

import numpy as np
import torch

from libai.utils.rng import RNGStates, get_rng_states, preserved_rng_states, set_rng_states
from tests.helpers.dist import run_on_ranks


def _draw():
    return torch.rand(3).tolist(), random.random(), float(np.random.rand()), np.random.randn()


def test_states_round_trip_through_json():
    states = json.loads(json.dumps(get_rng_states()))
    expected = _draw()
    set_rng_states(states)
    assert _draw() == expected


def test_preserved_states_are_not_advanced_by_the_block():
    before = get_rng_states()
    with preserved_rng_states():
        _draw()
    assert get_rng_states() == before


def _rank_draws_after_restore():
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    torch.manual_seed(100 + rank)
    random.seed(100 + rank)
    np.random.seed(100 + rank)
    saved = RNGStates().state_dict()
    expected = _draw()
    torch.manual_seed(0)  # lose the state, as a new process would
    RNGStates().load_state_dict(saved)
    return saved, expected, _draw()


def test_each_rank_restores_its_own_states():
    results = run_on_ranks(_rank_draws_after_restore, 2)
    (saved0, expected0, drawn0), (saved1, expected1, drawn1) = results
    assert saved0 == saved1  # the same (gathered) value on every rank
    assert drawn0 == expected0 and drawn1 == expected1 and expected0 != expected1


def test_another_world_size_restores_nothing_and_says_so(caplog):
    saved = {"per_rank": json.dumps([get_rng_states(), get_rng_states()])}
    before = get_rng_states()
    RNGStates().load_state_dict(saved)
    assert get_rng_states() == before
    assert "random states are not restored" in caplog.text
