"""`DictConfig.update` merges nested groups and warns about unknown keys."""
from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest
from omegaconf import DictConfig

from libai.config import ConfigKeyWarning, LazyCall, LazyConfig


def make_train() -> DictConfig:
    """A small stand-in for common/train.py's `train`."""
    return DictConfig(
        {
            "train_iter": 10,
            "amp": {"enabled": False, "dtype": None},
            "dist": {"data_parallel_size": None, "tensor_parallel_size": 1, "pipeline_parallel_size": 1},
            "scheduler": LazyCall("datetime.timedelta")(days=1, seconds=2),
            "evaluation": {"enabled": True, "evaluator": LazyCall("datetime.date")(year=2000, month=1, day=1)},
            "load_weight": None,
        },
        flags={"allow_objects": True},
    )


def test_update_merges_nested_groups() -> None:
    train = make_train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known keys: no warning at all
        train.update(dict(train_iter=20, dist=dict(tensor_parallel_size=2)), amp=dict(enabled=True))
    assert train.train_iter == 20
    assert dict(train.dist) == {"data_parallel_size": None, "tensor_parallel_size": 2, "pipeline_parallel_size": 1}
    assert dict(train.amp) == {"enabled": True, "dtype": None}


def test_update_unknown_key_warns_and_adds() -> None:
    train = make_train()
    with pytest.warns(ConfigKeyWarning, match=r"'trian_iter'.*nearest existing key is 'train_iter'"):
        train.update(dict(trian_iter=5))
    assert train.trian_iter == 5 and train.train_iter == 10
    with pytest.warns(ConfigKeyWarning, match=r"'dist.tensor_paralel_size'.*'dist.tensor_parallel_size'"):
        train.update(dist=dict(tensor_paralel_size=4))
    assert train.dist.tensor_paralel_size == 4 and train.dist.tensor_parallel_size == 1


def test_update_warning_names_full_key_inside_a_config() -> None:
    cfg = DictConfig({"train": make_train()}, flags={"allow_objects": True})
    with pytest.warns(ConfigKeyWarning, match=r"'train.amp.enabeld'.*'train.amp.enabled'"):
        cfg.train.amp.update(enabeld=True)


def test_update_lazycall_nodes() -> None:
    train = make_train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # A plain dict sets arguments of a LazyCall node; new argument names are fine.
        train.update(dict(scheduler=dict(seconds=5, microseconds=7)))
        # A LazyCall value replaces the old node: its arguments belong to another callable.
        train.update(dict(evaluation=dict(evaluator=LazyCall("datetime.time")(hour=3))))
        # update() on a LazyCall node itself behaves like dict.update.
        train.scheduler.update(days=3, weeks=1)
    assert dict(train.scheduler) == {
        "_target_": "datetime.timedelta",
        "days": 3,
        "seconds": 5,
        "microseconds": 7,
        "weeks": 1,
    }
    assert dict(train.evaluation.evaluator) == {"_target_": "datetime.time", "hour": 3}
    assert train.evaluation.enabled is True


def test_update_replaces_non_groups_and_accepts_pairs() -> None:
    train = make_train()
    train.update([("load_weight", {"path": "w.pt"})])  # None -> group: set
    assert train.load_weight.path == "w.pt"
    train.update(dist=None)  # group -> value: set
    assert train.dist is None
    empty = DictConfig({})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to compare with: no warning
        empty.update(a=1)
    assert empty.a == 1


def test_update_in_config_files(tmp_path: Path) -> None:
    (tmp_path / "base.py").write_text("train = dict(lr=1.0, dist=dict(tp=1, pp=1))\n")
    (tmp_path / "child.py").write_text(
        textwrap.dedent(
            """
            from .base import train
            train.update(dict(dist=dict(pp=2)))
            """
        )
    )
    (tmp_path / "other.py").write_text(
        textwrap.dedent(
            """
            from libai.config import LazyConfig
            train = LazyConfig.load_rel("base.py").train
            train.update(dict(dist=dict(tp=4)))
            """
        )
    )
    assert dict(LazyConfig.load(tmp_path / "child.py").train.dist) == {"tp": 1, "pp": 2}
    assert dict(LazyConfig.load(tmp_path / "other.py").train.dist) == {"tp": 4, "pp": 1}
