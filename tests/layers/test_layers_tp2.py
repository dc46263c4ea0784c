"""libai.layers on 2 ranks with tensor_parallel_size=2: equal to torch.nn and to one process."""
import pytest

from tests.helpers.dist import run_on_ranks
from tests.layers.test_layers import assert_close_to_reference, init_snapshot, run_layouts


@pytest.fixture(scope="module")
def ranks():
    # One spawn for the whole module: every check runs inside the workers.
    return [results[0] for results in run_on_ranks(run_layouts, 2, [{"tensor_parallel_size": 2}])]


def test_outputs_and_gradients_match_torch_nn(ranks):
    for rank, result in enumerate(ranks):
        assert_close_to_reference(result, f"tp=2 rank {rank}")


def test_sharded_initialisation_equals_one_process(ranks):
    from libai.utils import distributed as dist

    dist.setup_dist_util({}, device="cpu")
    expected = init_snapshot()
    for result in ranks:
        # Exact: every shard is the matching slice of the one-process draw.
        assert result["snapshot"] == expected


def test_sizes_that_do_not_divide_are_clear_errors(ranks):
    messages = ranks[0]["bad_sizes"]
    assert "column-parallel Linear out_features (3) is not divisible by tensor_parallel_size (2)" in messages[0]
    assert "row-parallel Linear in_features (3) is not divisible by tensor_parallel_size (2)" in messages[1]
    assert "num_attention_heads (3) is not divisible by tensor_parallel_size (2)" in messages[2]
    assert "VocabEmbedding num_embeddings (vocabulary size) (3) is not divisible" in messages[3]
