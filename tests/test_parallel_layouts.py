"""The tiny GPT trains the same model under every data/tensor-parallel layout.

Each run is a real `tools/train.sh` launch of `tests/configs/tiny_gpt.py` (global batch 16,
micro batch 4, 20 AdamW steps); the assertions read `metrics.json`.
"""
import os
import shutil

import pytest

from tests.helpers.runs import REPO, losses_by_iter, train_sh

CONFIG = os.path.join(REPO, "tests/configs/tiny_gpt.py")

# name: (processes, overrides)
LAYOUTS = {
    "dp1_tp1": (1, []),
    "dp2_tp1": (2, []),
    "dp1_tp2": (2, ["train.dist.tensor_parallel_size=2"]),
    "dp2_tp2": (4, ["train.dist.tensor_parallel_size=2"]),
    "dp1_tp2_act_ckpt": (2, ["train.dist.tensor_parallel_size=2", "train.activation_checkpoint.enabled=True"]),
    **{
        f"dp2_tp2_zero{stage}": (
            4,
            ["train.dist.tensor_parallel_size=2", "train.zero_optimization.enabled=True", f"train.zero_optimization.stage={stage}"],
        )
        for stage in (1, 2, 3)
    },
}


def _train(nproc, output_dir, *overrides, resume=False):
    return train_sh(nproc, output_dir, *overrides, resume=resume, config=CONFIG)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_gpt")
    out = {}
    for name, (nproc, overrides) in LAYOUTS.items():
        out[name] = str(root / name)
        _train(nproc, out[name], *overrides)
    # Saved under dp2·tp2 after 10 steps, resumed under 1·1 and under dp1·tp2.
    for name, (nproc, overrides) in (("resume_dp1_tp1", LAYOUTS["dp1_tp1"]), ("resume_dp1_tp2", LAYOUTS["dp1_tp2"])):
        out[name] = str(root / name)
        os.makedirs(out[name])
        shutil.copytree(os.path.join(out["dp2_tp2"], "model_0000009"), os.path.join(out[name], "model_0000009"))
        with open(os.path.join(out[name], "last_checkpoint"), "w") as f:
            f.write("model_0000009")
        _train(nproc, out[name], *overrides, resume=True)
    return out


def _assert_same_curve(losses, reference, iterations, label):
    assert sorted(losses) == list(iterations), label
    first = iterations[0]
    assert losses[first] == pytest.approx(reference[first], rel=1e-5), (label, first)
    for it in iterations:
        assert losses[it] == pytest.approx(reference[it], rel=1e-4), (label, it)


@pytest.mark.parametrize("layout", [name for name in LAYOUTS if name != "dp1_tp1"])
def test_layout_trains_the_one_process_model(runs, layout):
    reference = losses_by_iter(runs["dp1_tp1"])
    assert reference[19] < 0.8 * reference[0]  # it does learn
    _assert_same_curve(losses_by_iter(runs[layout]), reference, range(20), layout)


@pytest.mark.parametrize("resumed", ["resume_dp1_tp1", "resume_dp1_tp2"])
def test_checkpoint_resumes_under_another_layout(runs, resumed):
    _assert_same_curve(losses_by_iter(runs[resumed]), losses_by_iter(runs["dp2_tp2"]), range(10, 20), resumed)
