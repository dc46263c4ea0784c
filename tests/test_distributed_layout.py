"""Layout arithmetic of libai.utils.distributed and the mesh it builds on real processes."""
import pytest

from libai.utils import distributed as dist_utils
from libai.utils.distributed import DistLayoutError, get_layer_stage_ids, resolve_parallel_sizes
from tests.helpers.dist import run_on_ranks


def _layer_counts(stage_ids):
    return [stage_ids.count(s) for s in range(max(stage_ids) + 1)]


@pytest.mark.parametrize(
    "layers, stages, counts",
    [(24, 4, [6, 7, 7, 4]), (24, 2, [12, 12]), (48, 8, [6, 6, 7, 7, 7, 7, 7, 1]), (10, 4, [2, 2, 3, 3])],
)
def test_layer_to_stage_matches_libai(layers, stages, counts):
    assert _layer_counts(get_layer_stage_ids(layers, stages)) == counts


def test_custom_stage_ids_are_checked():
    assert get_layer_stage_ids(3, 2, [0, 0, 1]) == [0, 0, 1]
    with pytest.raises(DistLayoutError, match="3 entries but pipeline_num_layers is 4"):
        get_layer_stage_ids(4, 2, [0, 0, 1])
    with pytest.raises(DistLayoutError, match="outside"):
        get_layer_stage_ids(2, 2, [0, 2])


def test_parallel_sizes_infer_and_reject():
    assert resolve_parallel_sizes(8, None, 2, 2) == (2, 2, 2)
    assert resolve_parallel_sizes(4, 4, 1, 1) == (4, 1, 1)
    with pytest.raises(DistLayoutError, match="does not divide the world size"):
        resolve_parallel_sizes(6, None, 4, 1)
    with pytest.raises(DistLayoutError, match="data_parallel_size=2"):
        resolve_parallel_sizes(4, 3, 2, 1)


def _coordinates():
    util = dist_utils.setup_dist_util({"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "pipeline_num_layers": 2})
    import torch

    gathered = dist_utils.gather_data_parallel(torch.tensor([float(dist_utils.get_rank())]))
    mean = dist_utils.all_reduce_mean_data_parallel(torch.tensor([float(dist_utils.get_rank())]))
    return (
        util.data_parallel_size,
        dist_utils.get_pipeline_parallel_rank(),
        dist_utils.get_data_parallel_rank(),
        dist_utils.get_tensor_parallel_rank(),
        gathered.tolist(),
        mean.item(),
    )


def test_mesh_coordinates_on_8_ranks():
    results = run_on_ranks(_coordinates, 8)
    for rank, (dp, pp_rank, dp_rank, tp_rank, gathered, mean) in enumerate(results):
        assert dp == 2
        # Stages are contiguous rank blocks; tp is fastest inside a stage.
        assert (pp_rank, dp_rank, tp_rank) == (rank // 4, (rank // 2) % 2, rank % 2)
        partner = [r for r in range(8) if r // 4 == rank // 4 and r % 2 == rank % 2]
        assert gathered == [float(r) for r in partner]
        assert mean == pytest.approx(sum(partner) / 2)


def test_layer_idx_without_pipeline_is_stage_zero():
    """Without pipelining any layer_idx lives on the only stage, whatever pipeline_num_layers says."""
    dist_utils.setup_dist_util({}, device="cpu")
    assert dist_utils.get_layer_stage_id(11) == 0
    assert dist_utils.get_layer_stage_id(-1) == 0
    assert dist_utils.get_layer_placement(7) is dist_utils.get_stage_placement(0)


def test_build_once_per_machine_builds_on_local_rank_0_unless_ready(monkeypatch):
    built = []
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist_utils.build_once_per_machine(lambda: False, lambda: built.append("rank 0"))
    dist_utils.build_once_per_machine(lambda: True, lambda: built.append("again"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    dist_utils.build_once_per_machine(lambda: False, lambda: built.append("rank 1"))
    assert built == ["rank 0"]
