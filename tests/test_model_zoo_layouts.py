"""GPT-2, BERT, ViT, T5, Llama and iGPT (the task on its convolutional backbone; its transformer
backbone is GPT-2's layers), on the projects' real data, train 10 steps with
the same losses on one process and on 8 processes as dp2·tp2·pp2 (global batch 16, micro
batch 2: 8 micro-batches on one process, 4 per data-parallel rank through the 1F1B pipeline)."""
import os

import pytest

from tests.helpers.runs import REPO, read_metrics, train_sh

PARALLEL = ["train.dist.tensor_parallel_size=2", "train.dist.pipeline_parallel_size=2"]
# Llama's 8-process run also shards parameters (ZeRO-3) and recomputes its layers.
EXTRA = {"llama": ["train.zero_optimization.enabled=True", "train.zero_optimization.stage=3",
                   "train.activation_checkpoint.enabled=True"]}


def _losses(output_dir: str) -> dict:
    """{iteration: {loss name: value}} of the logged iterations."""
    return {m["iteration"]: {k: v for k, v in m.items() if "loss" in k} for m in read_metrics(output_dir)}


@pytest.mark.parametrize("name", ["gpt", "bert", "vit", "t5", "igpt_conv", "llama"])
def test_model_trains_the_same_under_dp2_tp2_pp2(name, tmp_path):
    config = os.path.join(REPO, f"tests/configs/zoo/{name}.py")
    one = str(tmp_path / "one")
    eight = str(tmp_path / "eight")
    train_sh(1, one, config=config)
    train_sh(8, eight, *PARALLEL, *EXTRA.get(name, []), config=config)
    reference, parallel = _losses(one), _losses(eight)
    assert sorted(reference) == sorted(parallel) == list(range(10))
    for it in range(10):
        for key, value in reference[it].items():
            tolerance = 1e-5 if it == 0 else 1e-4
            assert parallel[it][key] == pytest.approx(value, rel=tolerance), (name, it, key)
    assert reference[9]["total_loss"] < reference[0]["total_loss"]  # it learns


def test_llama_in_bf16_follows_fp32_within_its_precision(tmp_path):
    config = os.path.join(REPO, "tests/configs/zoo/llama.py")
    fp32, bf16 = str(tmp_path / "fp32"), str(tmp_path / "bf16")
    train_sh(1, fp32, config=config)
    train_sh(1, bf16, "train.amp.enabled=True", "train.amp.dtype=bfloat16", config=config)
    reference, amp = _losses(fp32), _losses(bf16)
    assert sorted(amp) == list(range(10))
    for it in range(10):
        assert amp[it]["total_loss"] == pytest.approx(reference[it]["total_loss"], rel=2e-2), it
