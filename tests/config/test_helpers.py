"""configurable, try_get_key, get_config errors."""
from __future__ import annotations

import pytest
from omegaconf import DictConfig, OmegaConf

from libai.config import LazyCall, configurable, get_config, instantiate, try_get_key


class Net:
    """A configurable class, the way LiBai models use it."""

    @configurable
    def __init__(self, hidden_size: int, num_layers: int = 2, dropout: float = 0.0) -> None:
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout

    @classmethod
    def from_config(cls, cfg):
        return {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers}


def test_configurable_class() -> None:
    cfg = OmegaConf.create({"hidden_size": 8, "num_layers": 3})
    net = Net(cfg)
    assert (net.hidden_size, net.num_layers, net.dropout) == (8, 3, 0.0)
    net = Net(cfg=cfg, dropout=0.5)  # extra kwargs pass through
    assert (net.hidden_size, net.num_layers, net.dropout) == (8, 3, 0.5)
    net = Net({"hidden_size": 4, "num_layers": 1})
    assert net.hidden_size == 4
    net = Net(16, num_layers=5)  # a plain call
    assert (net.hidden_size, net.num_layers) == (16, 5)
    # Through a LazyCall, as in LiBai configs: LazyCall(Net)(cfg=dict(...)).
    net = instantiate(LazyCall(Net)(cfg=dict(hidden_size=6, num_layers=1)))
    assert (net.hidden_size, net.num_layers) == (6, 1)


def test_configurable_function() -> None:
    @configurable(from_config=lambda cfg, scale=1: {"a": cfg.a * scale, "b": cfg.b})
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert add(OmegaConf.create({"a": 1, "b": 2}), scale=10) == 12
    assert add.from_config is not None


def test_configurable_errors() -> None:
    class NoFromConfig:
        @configurable
        def __init__(self, x: int = 0) -> None:
            self.x = x

    assert NoFromConfig(x=1).x == 1
    with pytest.raises(TypeError, match="no from_config"):
        NoFromConfig({"x": 1})
    with pytest.raises(TypeError, match="from_config"):
        configurable(lambda x: x)

    @configurable(from_config=lambda config: {})
    def f() -> None:
        return None

    with pytest.raises(TypeError, match="'cfg' as its first argument"):
        f({})


def test_try_get_key() -> None:
    cfg = DictConfig({"train": {"amp": {"enabled": True}, "x": None, "l": [1, {"y": 2}]}})
    assert try_get_key(cfg, "train.amp.enabled") is True
    assert try_get_key(cfg, "train.nope", default=7) == 7
    assert try_get_key(cfg, "nope", "train.amp.enabled", default=False) is True
    assert try_get_key(cfg, "train.x", default=5) is None  # present with None
    assert try_get_key(cfg, "train.l.1.y") == 2
    assert try_get_key(cfg, "train.amp.enabled.deeper", default="d") == "d"
    plain = {"a": {"b": [0, 3]}}
    assert try_get_key(plain, "a.b.1") == 3
    assert try_get_key(plain, "a.c", default=None) is None


def test_get_config_errors() -> None:
    with pytest.raises(FileNotFoundError, match=r"common/trian\.py.*nearest is 'common/train\.py'"):
        get_config("common/trian.py")
    with pytest.raises(ValueError, match="relative"):
        get_config("../setup.py")
