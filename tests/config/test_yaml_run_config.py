"""A Hydra-style YAML run config (`_target_` nodes, `${...}` interpolations, a `defaults:`
list of packaged configs) is the same config as its Python twin and trains the same."""
import os

import pytest
from omegaconf import OmegaConf

from libai.config import LazyConfig
from libai.config.lazy import ConfigFileError
from tests.helpers.runs import REPO, losses_by_iter, train_sh

YAML = os.path.join(REPO, "projects/mnist/config.yaml")
PYTHON = os.path.join(REPO, "projects/mnist/config.py")


def _as_yaml(cfg, path):
    OmegaConf.resolve(cfg)
    LazyConfig.save(cfg, path)
    with open(path) as f:
        return f.read()


def test_the_yaml_config_is_the_python_config(tmp_path):
    assert _as_yaml(LazyConfig.load(YAML), tmp_path / "y.yaml") == _as_yaml(LazyConfig.load(PYTHON), tmp_path / "p.yaml")


def test_left_out_sections_and_keys_take_the_packaged_defaults(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: {_target_: projects.mnist.modeling.model.MNISTNet, num_classes: 10}\n"
        "train: {train_iter: 7, log_period: '${train.train_iter}'}\n"
    )
    cfg = LazyConfig.load(str(config))
    defaults = LazyConfig.load(os.path.join(REPO, "configs/common/optim.py"))
    assert cfg.train.train_iter == 7 and cfg.train.log_period == 7 and cfg.train.seed == 1234
    assert cfg.optim.lr == defaults.optim.lr and cfg.graph.enabled is True  # LiBai's default
    config.write_text("defaults: [common/nothing]\nmodel: {}\n")
    with pytest.raises(ConfigFileError, match="defaults entry 'common/nothing'"):
        LazyConfig.load(str(config))


def test_the_yaml_config_trains_like_the_python_config(tmp_path):
    overrides = ("train.train_epoch=0", "train.train_iter=12", "train.log_period=1", "train.evaluation.enabled=False")
    yaml_run, python_run = str(tmp_path / "yaml"), str(tmp_path / "python")
    train_sh(1, yaml_run, *overrides, config=YAML)
    train_sh(1, python_run, *overrides, config=PYTHON)
    losses = losses_by_iter(yaml_run)
    assert sorted(losses) == list(range(12)) and losses == losses_by_iter(python_run)
