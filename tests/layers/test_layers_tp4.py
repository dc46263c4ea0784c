"""libai.layers on 4 ranks: tensor_parallel_size=4, dp2 x tp2 (batch split over dp), pp2 x tp2."""
import pytest

from tests.helpers.dist import run_on_ranks
from tests.layers.test_layers import V, assert_close_to_reference, init_snapshot, run_layouts

LAYOUTS = [
    {"tensor_parallel_size": 4},
    {"data_parallel_size": 2, "tensor_parallel_size": 2},
    {"pipeline_parallel_size": 2, "tensor_parallel_size": 2, "pipeline_num_layers": 2},
]


@pytest.fixture(scope="module")
def ranks():
    # One spawn for the whole module; the workers rebuild the mesh for each layout.
    return run_on_ranks(run_layouts, 4, LAYOUTS)


def test_tp4_matches_torch_nn(ranks):
    for rank, (tp4, _, _) in enumerate(ranks):
        assert_close_to_reference(tp4, f"tp=4 rank {rank}")


def test_dp2_tp2_matches_torch_nn(ranks):
    # Each dp rank computes on its half of the batch; parameter gradients summed over dp
    # equal the full-batch reference.
    for rank, (_, dp2tp2, _) in enumerate(ranks):
        assert_close_to_reference(dp2tp2, f"dp2xtp2 rank {rank}")


def test_tp4_initialisation_equals_one_process(ranks):
    from libai.utils import distributed as dist

    dist.setup_dist_util({}, device="cpu")
    expected = init_snapshot()
    for tp4, _, _ in ranks:
        assert tp4["snapshot"] == expected


def test_tp4_size_errors(ranks):
    messages = ranks[0][0]["bad_sizes"]
    assert all("not divisible by tensor_parallel_size (4)" in m for m in messages[:4])


def test_pp2_tp2_layers_live_on_their_stage(ranks):
    from libai.utils import distributed as dist

    from tests.layers.test_layers import pipeline_snapshot

    dist.setup_dist_util({"pipeline_num_layers": 2}, device="cpu")
    expected = pipeline_snapshot()
    for rank, (_, _, pp) in enumerate(ranks):
        stage = rank // 2
        assert_close_to_reference(pp, f"pp2xtp2 rank {rank}", min_checks=12)
        # Shards of the other stage's layer are empty; the head sits on the last stage.
        assert pp["other_stage_numel"] == 0
        assert pp["head_bias_numel"] == (V // 2 if stage == 1 else 0)
        own = [k for k in expected if k.startswith(f"layer{stage}.") or (stage == 1 and k == "head.bias")]
        mine = {k: expected[k] for k in own}
        assert pp["snapshot"] == mine
