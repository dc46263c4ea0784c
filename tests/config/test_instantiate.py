"""instantiate: nested LazyCalls, targets as objects or dotted strings, pass-through rules."""
from __future__ import annotations

import collections
import datetime
import fractions

import pytest
from omegaconf import DictConfig, OmegaConf

from libai.config import LazyCall, instantiate, locate


def double(x: int) -> int:
    """A function target."""
    return 2 * x


class Box:
    """A target that records its arguments."""

    def __init__(self, inner=None, items=None, options=None, scale: float = 1.0) -> None:
        self.inner = inner
        self.items = items
        self.options = options
        self.scale = scale


def test_nested_lazycalls_object_and_string_targets() -> None:
    cfg = LazyCall(Box)(
        inner=LazyCall("datetime.timedelta")(
            days=LazyCall(double)(x=LazyCall("tests.config.test_instantiate.double")(x=1)),
        ),
        items=[
            LazyCall(fractions.Fraction)(numerator=1, denominator=4),
            5,
            [LazyCall("datetime.date")(year=2020, month=2, day=3)],
        ],
        options={"plain": 1, "built": LazyCall(collections.Counter)(a=2)},
        scale=2.5,
    )
    box = instantiate(cfg)
    assert isinstance(box, Box)
    assert box.inner == datetime.timedelta(days=4)
    assert box.items == [fractions.Fraction(1, 4), 5, [datetime.date(2020, 2, 3)]]
    assert type(box.items) is list
    # A dict holding LazyCalls is instantiated inside and keeps attribute access.
    assert isinstance(box.options, DictConfig)
    assert box.options.plain == 1 and box.options.built == collections.Counter(a=2)
    assert box.scale == 2.5
    # The config itself is unchanged and can be instantiated again (new objects).
    assert instantiate(cfg) is not box
    assert cfg.inner._target_ == "datetime.timedelta"


def test_plain_values_pass_through() -> None:
    data = OmegaConf.create({"hidden_size": 8, "nested": {"a": [1, 2]}})
    assert instantiate(data) is data  # a non-LazyCall DictConfig is returned as is
    assert instantiate(LazyCall(Box)(options=data)).options is not None
    assert instantiate(LazyCall(Box)(options=data)).options.hidden_size == 8
    assert instantiate(5) == 5 and instantiate("s") == "s" and instantiate(None) is None
    assert instantiate({"_target_": "datetime.date", "year": 2001, "month": 1, "day": 1}) == datetime.date(2001, 1, 1)
    assert instantiate((LazyCall(double)(x=7), 1)) == (14, 1)
    assert instantiate(LazyCall(dict)(a=1)) == {"a": 1}  # dict classes are stored by import path


def test_interpolation_and_runtime_objects() -> None:
    cfg = DictConfig({"lr": 0.5, "opt": LazyCall(Box)(scale="${lr}")}, flags={"allow_objects": True})
    assert instantiate(cfg.opt).scale == 0.5
    marker = object()
    cfg.opt.inner = marker  # the trainer sets objects (model, optimizer) before instantiating
    assert instantiate(cfg.opt).inner is marker


def test_instantiate_errors() -> None:
    with pytest.raises(ImportError, match=r"no_such_pkg.*at config key 'bad'"):
        instantiate(DictConfig({"bad": LazyCall("no_such_pkg.Thing")()}, flags={"allow_objects": True}).bad)
    with pytest.raises(ImportError, match="has no attribute 'Nope'"):
        instantiate(LazyCall("datetime.Nope")())
    with pytest.raises(TypeError, match="not callable"):
        instantiate({"_target_": 3})
    with pytest.raises(TypeError) as info:
        instantiate(LazyCall(Box)(wrong=1))
    assert any("Box" in note for note in getattr(info.value, "__notes__", []))
    with pytest.raises(TypeError, match="LazyCall target"):
        LazyCall(3)
    with pytest.raises(TypeError, match="_target_"):
        LazyCall(Box)(_target_=1)


def test_locate() -> None:
    assert locate("datetime.timedelta") is datetime.timedelta
    assert locate("collections.OrderedDict.fromkeys") == collections.OrderedDict.fromkeys
    assert locate("tests.config.test_instantiate.Box") is Box
    with pytest.raises(ImportError):
        locate("")
