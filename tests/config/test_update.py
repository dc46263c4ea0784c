"""`merge_update` (and `update` inside config files) merges nested groups and warns about unknown keys.

Importing libai or loading a config leaves OmegaConf's own `DictConfig.update` in place."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest
from omegaconf import DictConfig

from libai.config import ConfigKeyWarning, LazyCall, LazyConfig, merge_update
from libai.config import lazy


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
        merge_update(train, dict(train_iter=20, dist=dict(tensor_parallel_size=2)), amp=dict(enabled=True))
    assert train.train_iter == 20
    assert dict(train.dist) == {"data_parallel_size": None, "tensor_parallel_size": 2, "pipeline_parallel_size": 1}
    assert dict(train.amp) == {"enabled": True, "dtype": None}


def test_update_unknown_key_warns_and_adds() -> None:
    train = make_train()
    with pytest.warns(ConfigKeyWarning, match=r"'trian_iter'.*nearest existing key is 'train_iter'"):
        merge_update(train, dict(trian_iter=5))
    assert train.trian_iter == 5 and train.train_iter == 10
    with pytest.warns(ConfigKeyWarning, match=r"'dist.tensor_paralel_size'.*'dist.tensor_parallel_size'"):
        merge_update(train, dist=dict(tensor_paralel_size=4))
    assert train.dist.tensor_paralel_size == 4 and train.dist.tensor_parallel_size == 1


def test_update_warning_names_full_key_inside_a_config() -> None:
    cfg = DictConfig({"train": make_train()}, flags={"allow_objects": True})
    with pytest.warns(ConfigKeyWarning, match=r"'train.amp.enabeld'.*'train.amp.enabled'"):
        merge_update(cfg.train.amp, enabeld=True)


def test_update_lazycall_nodes() -> None:
    train = make_train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # A plain dict sets arguments of a LazyCall node; new argument names are fine.
        merge_update(train, dict(scheduler=dict(seconds=5, microseconds=7)))
        # A LazyCall value replaces the old node: its arguments belong to another callable.
        merge_update(train, dict(evaluation=dict(evaluator=LazyCall("datetime.time")(hour=3))))
        # Merging into a LazyCall node itself behaves like dict.update.
        merge_update(train.scheduler, days=3, weeks=1)
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
    merge_update(train, [("load_weight", {"path": "w.pt"})])  # None -> group: set
    assert train.load_weight.path == "w.pt"
    merge_update(train, dist=None)  # group -> value: set
    assert train.dist is None
    empty = DictConfig({})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to compare with: no warning
        merge_update(empty, a=1)
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


def test_merge_update_returns_node_and_rejects_plain_dicts() -> None:
    train = make_train()
    assert merge_update(train, train_iter=3) is train
    with pytest.raises(TypeError, match="merges into a DictConfig, got dict"):
        merge_update({"a": 1}, a=2)


TP2_CONFIG = """
from libai.config import get_config
train = get_config("common/train.py").train
train.update(dict(dist=dict(tensor_parallel_size=2)))
"""


def test_config_file_update_merges_packaged_train(tmp_path: Path) -> None:
    (tmp_path / "tp2.py").write_text(TP2_CONFIG)
    (tmp_path / "imported.py").write_text(
        "from configs.common.train import train\ntrain.update(dict(dist=dict(tensor_parallel_size=2)))\n"
    )
    for name in ("tp2.py", "imported.py"):
        dist = LazyConfig.load(tmp_path / name).train.dist
        assert dist.tensor_parallel_size == 2
        assert dist.pipeline_parallel_size == 1 and "custom_pipeline_stage_id" in dist  # other keys kept


def test_load_restores_omegaconf_update(tmp_path: Path) -> None:
    own = DictConfig.update
    (tmp_path / "tp2.py").write_text(TP2_CONFIG)
    (tmp_path / "broken.py").write_text(TP2_CONFIG + "raise RuntimeError('config bug')\n")
    cfg = LazyConfig.load(tmp_path / "tp2.py")
    assert DictConfig.update is own and "update" not in DictConfig.__dict__
    with pytest.raises(RuntimeError, match="config bug"):
        LazyConfig.load(tmp_path / "broken.py")
    assert DictConfig.update is own and "update" not in DictConfig.__dict__
    # After the load, update is OmegaConf's: a nested dict replaces the group.
    cfg.train.update(dict(dist=dict(tensor_parallel_size=4)))
    assert dict(cfg.train.dist) == {"tensor_parallel_size": 4}


def test_import_and_load_leave_omegaconf_alone(tmp_path: Path) -> None:
    """In a fresh interpreter: OmegaConf's `update` before libai, after import, after a load."""
    (tmp_path / "tp2.py").write_text(TP2_CONFIG)
    script = f"""
from omegaconf import DictConfig
own = DictConfig.update
had_own_attr = "update" in DictConfig.__dict__
import libai
import libai.config
assert DictConfig.update is own, "import libai.config replaced DictConfig.update"
cfg = libai.config.LazyConfig.load({str(tmp_path / "tp2.py")!r})
assert cfg.train.dist.tensor_parallel_size == 2 and cfg.train.dist.pipeline_parallel_size == 1
assert DictConfig.update is own, "LazyConfig.load left DictConfig.update replaced"
assert ("update" in DictConfig.__dict__) == had_own_attr
"""
    repo = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_other_threads_keep_omegaconf_update_during_a_load() -> None:
    seen: dict = {}

    def plain_update() -> None:
        train = make_train()
        train.update(dict(dist=dict(tensor_parallel_size=2)))
        seen["dist"] = dict(train.dist)

    with lazy._config_file_patches():
        mine = make_train()
        mine.update(dict(dist=dict(tensor_parallel_size=2)))
        worker = threading.Thread(target=plain_update)
        worker.start()
        worker.join()
    assert mine.dist.pipeline_parallel_size == 1  # the loading thread merges
    assert seen["dist"] == {"tensor_parallel_size": 2}  # another thread replaces, as OmegaConf does
