"""Instance and DistTensorData: field access, stacking, errors, pickling."""
import pickle

import pytest
import torch

from libai.data.structures import DistTensorData, Instance


def test_dist_tensor_data_defaults_and_repr():
    d = DistTensorData(torch.zeros(2, 3))
    assert d.sbp_list == ["split_0", "broadcast"]
    assert d.placement_idx == 0
    assert "shape=(2, 3)" in repr(d)
    assert DistTensorData(torch.zeros(1), sbp_list=("broadcast",), placement_idx=-1).sbp_list == ["broadcast"]


def test_dist_tensor_data_rejects_bad_input():
    with pytest.raises(ValueError, match="'split_<dim>', 'broadcast' or 'partial_sum'"):
        DistTensorData(torch.zeros(1), sbp_list=["split0"]).check()
    with pytest.raises(ValueError, match="is not a pipeline stage"):
        DistTensorData(torch.zeros(1), placement_idx="last").check()
    with pytest.raises(TypeError, match="torch.as_tensor"):
        DistTensorData([1, 2])


def test_metadata_is_checked_once_per_batch_not_per_sample():
    samples = [DistTensorData(torch.zeros(2), sbp_list=["split0"]) for _ in range(3)]  # no error yet
    with pytest.raises(ValueError, match="'split_<dim>'"):
        DistTensorData.stack(samples)
    checked = []
    original = DistTensorData.check

    def counting_check(self):
        checked.append(self)
        return original(self)

    DistTensorData.check = counting_check
    try:
        batch = DistTensorData.stack([DistTensorData(torch.zeros(2)) for _ in range(8)])
    finally:
        DistTensorData.check = original
    assert len(checked) == 1  # the batch's, whose layout is the one every sample shares
    assert batch.placement_idx == 0 and batch.tensor.shape == (8, 2)


def test_dist_tensor_data_to_global_makes_a_dtensor_in_place():
    from torch.distributed.tensor import DTensor, Replicate, Shard

    from libai.utils.distributed import setup_dist_util

    setup_dist_util({}, device="cpu")
    d = DistTensorData(torch.arange(3, dtype=torch.float64), placement_idx=-1)
    assert d.to_global() is d
    assert isinstance(d.tensor, DTensor)
    assert list(d.tensor.placements) == [Shard(0), Replicate()]
    assert d.tensor.device_mesh.mesh_dim_names == ("dp", "tp")
    assert d.tensor.to_local().tolist() == [0.0, 1.0, 2.0]
    # Converting again keeps the data (a second to_global is harmless).
    assert d.to_global(sbp=["broadcast", "broadcast"]).tensor.placements == (Replicate(), Replicate())
    assert d.tensor.to_local().tolist() == [0.0, 1.0, 2.0]


def test_dist_tensor_data_stack():
    items = [DistTensorData(torch.full((2,), float(i)), placement_idx=-1) for i in range(3)]
    stacked = DistTensorData.stack(items)
    assert stacked.tensor.shape == (3, 2)
    assert stacked.tensor[:, 0].tolist() == [0.0, 1.0, 2.0]
    assert stacked.placement_idx == -1
    assert stacked.sbp_list == ["split_0", "broadcast"]


@pytest.mark.parametrize(
    "other, message",
    [
        (DistTensorData(torch.zeros(3)), r"item 1 has shape \(3,\) but item 0 has \(2,\)"),
        (DistTensorData(torch.zeros(2), sbp_list=["broadcast"]), "item 1 has sbp_list"),
        (DistTensorData(torch.zeros(2), placement_idx=-1), "item 1 has placement_idx -1"),
    ],
)
def test_dist_tensor_data_stack_checks(other, message):
    with pytest.raises(ValueError, match=message):
        DistTensorData.stack([DistTensorData(torch.zeros(2)), other])


def test_dist_tensor_data_stack_empty():
    with pytest.raises(ValueError, match="empty list"):
        DistTensorData.stack([])


def test_instance_field_access():
    inst = Instance(b=1, a=2)
    assert list(inst.get_fields()) == ["b", "a"]  # insertion order kept
    assert len(inst) == 2
    assert inst.a == 2 and inst.get("b") == 1
    inst.c = 3
    inst.set("d", 4)
    assert inst.has("c") and "d" in inst and not inst.has("e")
    inst.remove("b")
    assert list(inst.get_fields()) == ["a", "c", "d"]
    with pytest.raises(AttributeError, match="no field 'zz'"):
        _ = inst.zz
    with pytest.raises(KeyError, match="no field 'zz'"):
        inst.get("zz")
    with pytest.raises(KeyError, match="no field 'zz' to remove"):
        inst.remove("zz")
    with pytest.raises(TypeError, match="not iterable"):
        iter(inst)


def test_instance_pickles():
    inst = Instance(x=DistTensorData(torch.ones(2), placement_idx=-1), y=[1, 2])
    back = pickle.loads(pickle.dumps(inst))
    assert list(back.get_fields()) == ["x", "y"]
    assert back.x.tensor.tolist() == [1.0, 1.0] and back.x.placement_idx == -1
    assert back.y == [1, 2]


class _Boxed:
    """A field type with its own stack()."""

    def __init__(self, value):
        self.value = value

    @staticmethod
    def stack(items):
        return sum(item.value for item in items)


def test_instance_stack_each_kind():
    samples = [
        Instance(
            t=torch.tensor([i, i + 1]),
            d=DistTensorData(torch.tensor(i), placement_idx=-1),
            l=[i, "w"],
            c=_Boxed(i),
        )
        for i in range(3)
    ]
    batch = Instance.stack(samples)
    assert list(batch.get_fields()) == ["t", "d", "l", "c"]
    assert batch.t.tolist() == [[0, 1], [1, 2], [2, 3]]
    assert batch.d.tensor.tolist() == [0, 1, 2] and batch.d.placement_idx == -1
    assert batch.l == [[0, "w"], [1, "w"], [2, "w"]]
    assert batch.c == 3


def test_instance_stack_errors():
    with pytest.raises(ValueError, match="empty list"):
        Instance.stack([])
    with pytest.raises(ValueError, match=r"item 1 has fields \['b'\] but item 0 has \['a'\]"):
        Instance.stack([Instance(a=torch.zeros(1)), Instance(b=torch.zeros(1))])
    with pytest.raises(TypeError, match="field 'a' holds int"):
        Instance.stack([Instance(a=1), Instance(a=2)])
    with pytest.raises(TypeError, match="item 0 is a dict"):
        Instance.stack([{"a": 1}])
    with pytest.raises(ValueError, match="item 1 has shape"):
        Instance.stack([Instance(a=DistTensorData(torch.zeros(1))), Instance(a=DistTensorData(torch.zeros(2)))])
