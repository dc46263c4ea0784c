"""train.wandb: an offline Weights & Biases run holds the scalars of metrics.json and the
resolved config, continues on --resume, and a missing package is one line; curves.png."""
import os

import pytest

from libai.config import ConfigValueError
from libai.config.checks import check_train_config
from libai.utils.events import EventStorage, WandbWriter
from tests.helpers.runs import read_metrics, train_sh
from tests.helpers.wandb_files import offline_runs, read_run

pytest.importorskip("wandb", reason="the optional extra: pip install -e .[wandb]")

RUN = (
    "train.wandb.enabled=True",
    "train.wandb.project=libai-test",
    "train.wandb.tags=['mnist','ci']",
    "train.train_epoch=0",
    "train.log_period=4",
    "train.evaluation.eval_period=8",
    "train.evaluation.eval_iter=2",
    "train.checkpointer.period=8",
)


def _scalars(records):
    return {r["iteration"]: {k: v for k, v in r.items() if k != "iteration"} for r in records}


def _logged(runs):
    """{step: scalars} over W&B run files, the first value of a step winning (as W&B keeps it)."""
    steps = {}
    for path in runs:
        for row in read_run(path)["history"]:
            scalars = {k: v for k, v in row.items() if not k.startswith("_")}
            steps.setdefault(row["_step"], scalars)
    return steps


def test_offline_run_holds_the_scalars_of_metrics_json_and_resumes(tmp_path):
    out = str(tmp_path / "run")
    train_sh(1, out, *RUN, "train.train_iter=12")
    wandb_dir = os.path.join(out, "wandb")
    (first,) = offline_runs(wandb_dir)
    run = read_run(first)
    assert run["finished"]  # the writer finished the run at the end of training
    assert _logged([first]) == _scalars(read_metrics(out))
    assert {3, 7, 11} <= set(_logged([first])) and "Acc@1" in _logged([first])[7]
    # The resolved config, as config.yaml holds it (train_iter given, samples derived).
    assert run["config"]["train"]["train_iter"] == 12 and run["config"]["train"]["samples"] == 12 * 32
    assert run["config"]["train"]["wandb"]["tags"] == ["mnist", "ci"]
    assert open(os.path.join(out, "curves.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # Resume to 20: the same W&B run continues, and the scalars still match metrics.json.
    train_sh(1, out, *RUN, "train.train_iter=20", resume=True)
    runs = offline_runs(wandb_dir)
    assert len(runs) == 2 and read_run(runs[1])["run_id"] == run["run_id"]
    assert _logged(runs) == _scalars(read_metrics(out))
    assert max(_logged(runs)) == 19


def test_missing_wandb_is_one_config_error(monkeypatch):
    import importlib.util

    from libai.config import get_config

    cfg = get_config("common/train.py")
    cfg.train.wandb.enabled = True
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    with pytest.raises(ConfigValueError, match=r"pip install -e \.\[wandb\]"):
        check_train_config(cfg, groups=("train",))


@pytest.mark.parametrize(
    "key, value",
    [("mode", "cloud"), ("tags", "mnist"), ("enabled", "yes")],
)
def test_bad_wandb_values_name_the_key(key, value):
    from libai.config import get_config

    cfg = get_config("common/train.py")
    cfg.train.wandb[key] = value
    with pytest.raises(ConfigValueError, match=f"train.wandb.{key}"):
        check_train_config(cfg, groups=("train",))


def test_writer_creates_nothing_before_its_first_write(tmp_path):
    writer = WandbWriter(str(tmp_path), mode="offline")
    with EventStorage():
        writer.write()  # nothing put yet: no run
    writer.close()
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="W&B mode"):
        WandbWriter(str(tmp_path), mode="cloud")
