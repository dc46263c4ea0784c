"""The packaged configs: common/train.py, common/optim.py, common/models/graph.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from libai.config import ConfigKeyWarning, LazyConfig, get_config, instantiate, merge_update


def test_train_defaults() -> None:
    train = get_config("common/train.py").train
    assert train.output_dir == "./output"
    assert (train.train_micro_batch_size, train.global_batch_size, train.num_accumulation_steps) == (32, None, None)
    assert (train.train_iter, train.train_epoch, train.warmup_ratio, train.start_iter) == (10000, 0, 0, 0)
    assert (train.consumed_train_samples, train.consumed_valid_samples, train.train_samples) == (0, 0, None)
    assert dict(train.amp) == {"enabled": False, "dtype": None}
    assert train.activation_checkpoint.enabled is False
    assert dict(train.zero_optimization) == {"enabled": False, "stage": 1}
    assert dict(train.checkpointer) == {"period": 5000, "max_to_keep": 100, "save_model_after_n_epoch": None, "save_top_k": 0}
    assert dict(train.early_stopping) == {"enabled": False, "patience": 3, "min_delta": 0.0}
    assert train.overfit_batches == 0
    assert dict(train.wandb) == {"enabled": False, "project": None, "name": None, "tags": [], "mode": "offline"}
    assert train.test_micro_batch_size == 32
    ev = train.evaluation
    assert (ev.enabled, ev.eval_period, ev.eval_after_n_epoch, ev.eval_iter) == (True, 5000, None, 100000)
    assert (ev.eval_metric, ev.eval_mode) == ("Acc@1", "max")
    assert ev.evaluator._target_.__name__ == "ClsEvaluator" and list(ev.evaluator.topk) == [1, 5]
    assert (train.load_weight, train.log_period, train.seed) == ("", 20, 1234)
    assert train.gc_freeze is True
    sched = train.scheduler
    assert sched._target_.__name__ == "WarmupCosineLR"
    assert (sched.warmup_factor, sched.alpha, sched.warmup_method) == (0.001, 0.01, "linear")
    assert dict(train.dist) == {
        "data_parallel_size": None,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "pipeline_num_layers": None,
        "custom_pipeline_stage_id": None,
        "exact_reduction": False,
    }
    assert train.pipeline.schedule == "1F1B"
    assert (train.device, train.input_placement_device, train.rdma_enabled) == ("auto", "cuda", True)
    assert (train.nccl_fusion_threshold_mb, train.nccl_fusion_max_ops) == (16, 24)


def test_optim_and_graph_defaults() -> None:
    optim = get_config("common/optim.py").optim
    assert optim._target_ is torch.optim.AdamW
    assert (optim.lr, optim.weight_decay, list(optim.betas), optim.eps) == (1e-4, 0.01, [0.9, 0.999], 1e-8)
    params = optim.params
    assert params._target_.__name__ == "get_default_optimizer_params"
    assert (params.clip_grad_max_norm, params.clip_grad_norm_type) == (1.0, 2.0)
    assert (params.weight_decay_norm, params.weight_decay_bias) == (0.0, 0.0)
    graph = get_config("common/models/graph.py").graph
    assert (graph.enabled, graph.debug, graph.auto_parallel.enabled) == (True, -1, False)
    assert graph.train_graph._target_.__name__ == "GraphBase" and graph.train_graph.is_train is True
    assert graph.eval_graph.is_train is False


def test_common_configs_instantiate() -> None:
    optim_cfg = get_config("common/optim.py").optim
    optim_cfg.params.model = torch.nn.Linear(2, 2)
    optimizer = instantiate(optim_cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2
    train = get_config("common/train.py").train
    train.scheduler.optimizer = optimizer
    train.scheduler.max_iter = 10
    train.scheduler.warmup_iter = 2
    assert isinstance(instantiate(train.scheduler), torch.optim.lr_scheduler.LRScheduler)
    assert type(instantiate(train.evaluation.evaluator)).__name__ == "ClsEvaluator"


def test_train_update_merges_and_warns() -> None:
    train = get_config("common/train.py").train
    merge_update(train, dict(train_micro_batch_size=8, dist=dict(tensor_parallel_size=2)))
    assert train.train_micro_batch_size == 8
    assert train.dist.tensor_parallel_size == 2 and train.dist.pipeline_parallel_size == 1
    assert "custom_pipeline_stage_id" in train.dist
    expected = r"'train.dist.pipline_parallel_size'.*nearest existing key is 'train.dist.pipeline_parallel_size'"
    with pytest.warns(ConfigKeyWarning, match=expected):
        merge_update(train, dict(dist=dict(pipline_parallel_size=2)))
    assert get_config("common/train.py").train.dist.tensor_parallel_size == 1  # fresh each call


def test_project_config_styles(tmp_path: Path) -> None:
    """A project config outside the repo: LiBai's `from configs.common...` and get_config."""
    (tmp_path / "a.py").write_text(
        textwrap.dedent(
            """
            from configs.common.train import train
            from configs.common.optim import optim
            train.update(dict(train_iter=7, dist=dict(pipeline_parallel_size=2)))
            optim.lr = 0.5
            """
        )
    )
    (tmp_path / "b.py").write_text(
        textwrap.dedent(
            """
            from libai.config import get_config
            train = get_config("common/train.py").train
            graph = get_config("common/models/graph.py").graph
            train.update(dict(train_iter=9, amp=dict(enabled=True)))
            graph.enabled = False
            """
        )
    )
    a = LazyConfig.load(tmp_path / "a.py")
    assert a.train.train_iter == 7
    assert a.train.dist.pipeline_parallel_size == 2 and a.train.dist.tensor_parallel_size == 1
    assert a.optim.lr == 0.5
    b = LazyConfig.load(tmp_path / "b.py")
    assert b.train.train_iter == 9 and dict(b.train.amp) == {"enabled": True, "dtype": None}
    assert b.graph.enabled is False
    # The whole default config survives save -> load as YAML.
    path = LazyConfig.save(b, tmp_path / "config.yaml")
    assert path.endswith("config.yaml")
    assert LazyConfig.load(path) == b
    again = LazyConfig.load(tmp_path / "a.py")
    assert again.train.train_iter == 7 and again.optim.lr == 0.5 and again.train is not a.train


def test_get_config_outside_source_tree(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, os
        from libai.config import get_config
        train = get_config("common/train.py").train
        optim = get_config("common/optim.py").optim
        graph = get_config("common/models/graph.py").graph
        print(json.dumps({"cwd": os.getcwd(), "iter": train.train_iter, "lr": optim.lr, "graph": graph.enabled}))
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"cwd": str(tmp_path), "iter": 10000, "lr": 1e-4, "graph": True}


def test_unread_train_key_warns_with_the_nearest_key() -> None:
    from libai.config import check_train_config

    cfg = get_config("common/train.py")
    cfg.train.eval_period = 1562  # LiBai's swin_imagenet.py sets this; nothing reads it
    cfg.train.samples = 10  # derived at run time, kept in config.yaml: no warning
    full = OmegaConf.create({"model": {"_target_": "torch.nn.Identity"}, "optim": {"_target_": "torch.optim.SGD"},
                             "graph": {"enabled": False}, "dataloader": {"train": {"_target_": "x"}}})
    full.train = cfg.train
    with pytest.warns(ConfigKeyWarning, match=r"train\.eval_period .* the nearest is train\.evaluation\.eval_period"):
        check_train_config(full)
