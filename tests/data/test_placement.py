"""`placement_idx` and `sbp_list` decide what each rank's model receives: a pipeline stage
gets only the fields placed on it (a data-less stand-in for the others, which raises a
clear error when computed with), laid out over its data- and tensor-parallel ranks."""
import os

import pytest
import torch
import torch.nn.functional as F

from libai.data.placement import ALL_STAGES, PlacementError, UnplacedField, check_placement_idx, is_placed_on
from tests.helpers.dist import run_on_ranks
from tests.helpers.runs import REPO, train_sh


def _stand_in(shape=(4, 6), stage=1):
    return UnplacedField("input_ids", torch.zeros(shape, dtype=torch.long), 0, stage, 1)


def test_a_stand_in_has_the_fields_metadata_and_no_data():
    field = _stand_in()
    assert field.shape == (4, 6) and field.dtype == torch.long and field.is_meta
    assert field.to("cpu") is field
    assert "input_ids" in repr(field)


def test_a_stand_in_survives_the_micro_batch_concatenation_and_split():
    merged = torch.cat([_stand_in(), _stand_in()])
    assert isinstance(merged, UnplacedField) and merged.shape == (8, 6)
    chunks = torch.tensor_split(merged, 4, 0)
    assert all(isinstance(c, UnplacedField) and c.shape == (2, 6) for c in chunks)


@pytest.mark.parametrize(
    "compute",
    [lambda t: t + 1, lambda t: F.embedding(t, torch.zeros(8, 2)), lambda t: t.float().mean(), lambda t: t.tolist()],
)
def test_computing_with_a_stand_in_names_the_field_the_stage_and_the_fix(compute):
    with pytest.raises(PlacementError) as err:
        compute(_stand_in(stage=1))
    assert str(err.value) == (
        "batch field 'input_ids' is used on pipeline stage 1 but was placed on placement_idx=0: set "
        "placement_idx=-1 on its DistTensorData in the dataset (or 'all' when several stages use it)"
    )


def test_placement_idx_values():
    assert [is_placed_on(p, 1, 2) for p in (0, -1, 1, ALL_STAGES)] == [False, True, True, True]
    assert check_placement_idx(torch.tensor(1).item()) == 1
    with pytest.raises(PlacementError, match="names no stage of a 2-stage pipeline"):
        is_placed_on(2, 0, 2)
    for bad in ("first", 1.5, True, None):
        with pytest.raises(PlacementError, match="is not a pipeline stage"):
            check_placement_idx(bad)


def _batch():
    from libai.data.structures import DistTensorData, Instance

    return Instance(
        input_ids=DistTensorData(torch.arange(8).view(2, 4)),
        attention_mask=DistTensorData(torch.ones(2, 4), placement_idx=ALL_STAGES),
        labels=DistTensorData(torch.arange(8).view(2, 4) + 1, placement_idx=-1),
        whole=DistTensorData(torch.full((2, 1), float(int(os.environ["RANK"]))), sbp_list=["broadcast", "broadcast"]),
    )


def _what_each_stage_receives(layout: dict) -> dict:
    from libai.engine.trainer import default_batch_fn
    from libai.utils import distributed as dist

    dist.setup_dist_util(layout, device="cpu")
    inputs = default_batch_fn(_batch())
    return {key: "stand-in" if isinstance(value, UnplacedField) else value.tolist() for key, value in inputs.items()}


def test_under_pp2_each_stage_receives_only_its_fields():
    first, last = run_on_ranks(_what_each_stage_receives, 2, dict(pipeline_parallel_size=2, pipeline_num_layers=2))
    assert first["labels"] == "stand-in" and last["input_ids"] == "stand-in"
    assert first["input_ids"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert last["labels"] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert first["attention_mask"] == last["attention_mask"] == [[1.0] * 4] * 2


def test_sbp_list_lays_a_field_out_over_the_data_parallel_ranks():
    """The loader gives each data-parallel rank its shard; `broadcast` over "dp" gathers the
    global batch on every rank (the default `split_0` keeps the shard)."""
    ranks = run_on_ranks(_what_each_stage_receives, 2, dict(data_parallel_size=2))
    for rank, received in enumerate(ranks):
        assert received["whole"] == [[0.0], [0.0], [1.0], [1.0]]
        assert received["input_ids"] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_a_field_placed_on_the_wrong_stage_is_one_clear_error(tmp_path):
    proc = train_sh(
        2,
        str(tmp_path / "out"),
        "train.dist.pipeline_parallel_size=2",
        "train.train_iter=2",
        "+dataloader.train.dataset.0.labels_placement_idx=0",
        config=os.path.join(REPO, "tests/configs/tiny_gpt.py"),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        "error: batch field 'labels' is used on pipeline stage 1 but was placed on placement_idx=0: set "
        "placement_idx=-1 on its DistTensorData in the dataset" in proc.stderr
    ), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
