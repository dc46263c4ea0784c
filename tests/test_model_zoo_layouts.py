"""The model zoo on the projects' real data trains with the one-process losses under parallel layouts.

GPT-2, BERT, ViT, T5 and iGPT (the task on its convolutional backbone; its transformer
backbone is GPT-2's layers) train 10 steps on one process and on 8 processes as dp2·tp2·pp2
(global batch 16, micro batch 2: 8 micro-batches on one process, 4 per data-parallel rank
through the 1F1B pipeline). RoBERTa (LiBai's configs/roberta_pretrain.py, shrunk) trains 10
steps on one process and as dp2·tp2 on 4 processes. Llama trains 20 steps under dp2, tp2, pp2
and dp2·tp2·pp2 (the last with ZeRO-3 and activation checkpointing), against one one-process
run. ResMLP, Swin and Swin V2 train 10 steps under dp2·tp2 (4 processes) and pp2 (2
processes), each against one one-process run (ResMLP's blocks cross the stage boundary as
views of a transposed patch grid).
"""
import os

import pytest

from tests.helpers.runs import REPO, read_metrics, train_sh

PARALLEL = ["train.dist.tensor_parallel_size=2", "train.dist.pipeline_parallel_size=2"]
LLAMA_CONFIG = os.path.join(REPO, "tests/configs/zoo/llama.py")
# The vision models LiBai's configs name, each against one one-process run.
VISION_LAYOUTS = {
    "dp2_tp2": (4, ["train.dist.tensor_parallel_size=2"]),
    "pp2": (2, ["train.dist.pipeline_parallel_size=2"]),
}
LLAMA_LAYOUTS = {
    "dp2": (2, []),
    "tp2": (2, ["train.dist.tensor_parallel_size=2"]),
    "pp2": (2, ["train.dist.pipeline_parallel_size=2"]),
    "dp2_tp2_pp2_zero3_recompute": (8, [*PARALLEL, "train.zero_optimization.enabled=True",
                                        "train.zero_optimization.stage=3",
                                        "train.activation_checkpoint.enabled=True"]),
}


def _losses(output_dir: str) -> dict:
    """{iteration: {loss name: value}} of the logged iterations."""
    return {m["iteration"]: {k: v for k, v in m.items() if "loss" in k} for m in read_metrics(output_dir)}


def _assert_same_losses(reference: dict, parallel: dict, steps: int, label: str) -> None:
    """Every logged loss term within 1e-5 at the first step and 1e-4 after; and the model learns."""
    assert sorted(reference) == sorted(parallel) == list(range(steps)), label
    for it in range(steps):
        for key, value in reference[it].items():
            tolerance = 1e-5 if it == 0 else 1e-4
            assert parallel[it][key] == pytest.approx(value, rel=tolerance), (label, it, key)
    assert reference[steps - 1]["total_loss"] < reference[0]["total_loss"]  # it learns


@pytest.mark.parametrize("name", ["gpt", "bert", "vit", "t5", "igpt_conv"])
def test_model_trains_the_same_under_dp2_tp2_pp2(name, tmp_path):
    config = os.path.join(REPO, f"tests/configs/zoo/{name}.py")
    one = str(tmp_path / "one")
    eight = str(tmp_path / "eight")
    train_sh(1, one, config=config)
    train_sh(8, eight, *PARALLEL, config=config)
    _assert_same_losses(_losses(one), _losses(eight), 10, name)


def test_roberta_trains_the_same_under_dp2_tp2(tmp_path):
    config = os.path.join(REPO, "tests/configs/zoo/roberta.py")
    one = str(tmp_path / "one")
    four = str(tmp_path / "four")
    train_sh(1, one, config=config)
    train_sh(4, four, "train.dist.tensor_parallel_size=2", config=config)
    _assert_same_losses(_losses(one), _losses(four), 10, "roberta dp2 tp2")


@pytest.fixture(scope="module")
def llama_one_process(tmp_path_factory) -> dict:
    """The losses of the shrunk Llama's 20 steps on one process, shared by the Llama tests."""
    output_dir = str(tmp_path_factory.mktemp("llama_one_process"))
    train_sh(1, output_dir, config=LLAMA_CONFIG)
    return _losses(output_dir)


@pytest.mark.parametrize("layout", sorted(LLAMA_LAYOUTS))
def test_llama_trains_the_same_under_each_layout(layout, llama_one_process, tmp_path):
    nproc, overrides = LLAMA_LAYOUTS[layout]
    train_sh(nproc, str(tmp_path), *overrides, config=LLAMA_CONFIG)
    _assert_same_losses(llama_one_process, _losses(str(tmp_path)), 20, f"llama {layout}")


def test_llama_in_bf16_follows_fp32_within_its_precision(llama_one_process, tmp_path):
    train_sh(1, str(tmp_path), "train.amp.enabled=True", "train.amp.dtype=bfloat16", config=LLAMA_CONFIG)
    amp = _losses(str(tmp_path))
    assert sorted(amp) == list(range(20))
    for it in range(20):
        assert amp[it]["total_loss"] == pytest.approx(llama_one_process[it]["total_loss"], rel=2e-2), it


@pytest.fixture(scope="module")
def one_process_losses(tmp_path_factory):
    """`losses(name)`: the one-process losses of zoo config `name`, run once per module."""
    cache = {}

    def losses(name: str) -> dict:
        if name not in cache:
            output_dir = str(tmp_path_factory.mktemp(f"{name}_one_process"))
            train_sh(1, output_dir, config=os.path.join(REPO, f"tests/configs/zoo/{name}.py"))
            cache[name] = _losses(output_dir)
        return cache[name]

    return losses


@pytest.mark.parametrize("layout", sorted(VISION_LAYOUTS))
@pytest.mark.parametrize("name", ["resmlp", "swin", "swinv2"])
def test_vision_model_trains_the_same_under_each_layout(name, layout, one_process_losses, tmp_path):
    nproc, overrides = VISION_LAYOUTS[layout]
    train_sh(nproc, str(tmp_path), *overrides, config=os.path.join(REPO, f"tests/configs/zoo/{name}.py"))
    _assert_same_losses(one_process_losses(name), _losses(str(tmp_path)), 10, f"{name} {layout}")
