"""Switches that combine with pipeline parallelism train the one-process model.

Real `tools/train.sh` launches of `tests/configs/tiny_gpt.py` (global batch 16, micro batch
4, 20 AdamW steps), as in `test_parallel_layouts.py`: graph mode (each block compiled)
under pp=2, fp16 autocast with the GradScaler under pp=2, and ZeRO under the interleaved
1F1B schedule (two virtual stages per rank) with dp=2 x pp=2.
"""
import os

import pytest

from tests.helpers.runs import REPO, losses_by_iter, train_sh

CONFIG = os.path.join(REPO, "tests/configs/tiny_gpt.py")
PP2 = ["train.dist.pipeline_parallel_size=2"]

RUNS = {
    "dp1_tp1": (1, []),
    "pp2_graph": (2, PP2 + ["graph.enabled=True"]),
    "pp2_fp16": (2, PP2 + ["train.amp.enabled=True", "train.amp.dtype=float16"]),
    "dp2_pp2_interleaved_zero2": (4, PP2 + ["train.pipeline.schedule=Interleaved1F1B",
                                            "train.zero_optimization.enabled=True", "train.zero_optimization.stage=2"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_combinations")
    out = {}
    for name, (nproc, overrides) in RUNS.items():
        out[name] = str(root / name)
        proc = train_sh(nproc, out[name], *overrides, config=CONFIG)
        out[name + ".log"] = proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize("layout", ["pp2_graph", "dp2_pp2_interleaved_zero2"])
def test_combination_trains_the_one_process_model(runs, layout):
    reference, losses = losses_by_iter(runs["dp1_tp1"]), losses_by_iter(runs[layout])
    assert sorted(losses) == list(range(20)), layout
    assert losses[0] == pytest.approx(reference[0], rel=1e-5), layout
    for it in range(20):
        assert losses[it] == pytest.approx(reference[it], rel=1e-4), (layout, it)


def test_graph_mode_compiles_each_block_under_the_pipeline(runs):
    log = runs["pp2_graph.log"]
    assert "torch.compile of each of" in log
    assert "running eagerly instead" not in log  # inductor compiled on this machine


def test_fp16_with_loss_scaling_under_the_pipeline_follows_fp32(runs):
    """fp16 keeps 11 mantissa bits (with loss scaling): within 2% of fp32, the AMP bound."""
    reference, amp = losses_by_iter(runs["dp1_tp1"]), losses_by_iter(runs["pp2_fp16"])
    assert sorted(amp) == list(range(20))
    for it in range(20):
        assert amp[it] == pytest.approx(reference[it], rel=2e-2), it
    assert amp != reference  # autocast did run in fp16
