"""The tiny GPT trains the same model under every data/tensor/pipeline-parallel layout.

Each run is a real `tools/train.sh` launch of `tests/configs/tiny_gpt.py` (global batch 16,
micro batch 4, 20 AdamW steps); the assertions read `metrics.json`.
"""
import os
import shutil
import subprocess

import pytest

from tests.helpers.dist import free_port
from tests.helpers.runs import REPO, losses_by_iter, train_sh

CONFIG = os.path.join(REPO, "tests/configs/tiny_gpt.py")

# name: (processes, overrides)
LAYOUTS = {
    "dp1_tp1": (1, []),
    "dp2_tp1": (2, []),
    "dp1_tp2": (2, ["train.dist.tensor_parallel_size=2"]),
    "dp2_tp2": (4, ["train.dist.tensor_parallel_size=2"]),
    "dp1_tp2_act_ckpt": (2, ["train.dist.tensor_parallel_size=2", "train.activation_checkpoint.enabled=True"]),
    "dp1_tp1_pp2_gpipe": (2, ["train.dist.pipeline_parallel_size=2", "train.pipeline.schedule=GPipe"]),
    "dp1_tp1_pp2_interleaved": (2, ["train.dist.pipeline_parallel_size=2", "train.pipeline.schedule=Interleaved1F1B"]),
    "dp1_tp2_pp2": (4, ["train.dist.tensor_parallel_size=2", "train.dist.pipeline_parallel_size=2"]),
    "dp2_tp2_pp2": (8, ["train.dist.tensor_parallel_size=2", "train.dist.pipeline_parallel_size=2"]),
    "dp2_tp2_bf16": (4, ["train.dist.tensor_parallel_size=2", "train.amp.enabled=True"]),
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
    # Saved under dp2·tp2·pp2 after 10 steps, resumed under 1·1·1 and under dp1·tp2·pp2.
    for name, (nproc, overrides) in (("resume_dp1_tp1", LAYOUTS["dp1_tp1"]), ("resume_dp1_tp2_pp2", LAYOUTS["dp1_tp2_pp2"])):
        out[name] = str(root / name)
        os.makedirs(out[name])
        shutil.copytree(os.path.join(out["dp2_tp2_pp2"], "model_0000009"), os.path.join(out[name], "model_0000009"))
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


@pytest.mark.parametrize("layout", [name for name in LAYOUTS if name != "dp1_tp1" and "bf16" not in name])
def test_layout_trains_the_one_process_model(runs, layout):
    reference = losses_by_iter(runs["dp1_tp1"])
    assert reference[19] < 0.8 * reference[0]  # it does learn
    _assert_same_curve(losses_by_iter(runs[layout]), reference, range(20), layout)


def test_bf16_amp_follows_fp32_within_its_precision(runs):
    """bf16 autocast keeps 8 mantissa bits: the dp2·tp2 bf16 curve stays within 2% of fp32."""
    reference, bf16 = losses_by_iter(runs["dp1_tp1"]), losses_by_iter(runs["dp2_tp2_bf16"])
    assert sorted(bf16) == list(range(20)) and bf16[0] != reference[0]
    for it in range(20):
        assert bf16[it] == pytest.approx(reference[it], rel=2e-2), it


def test_two_nodes_train_like_four_local_processes(runs, tmp_path):
    """`NODE=2 NODE_RANK=0|1 tools/train.sh ... 2` on one machine equals dp2·tp2 on 4 processes."""
    output_dir = str(tmp_path / "two_nodes")
    port = str(free_port())
    cmd = ["bash", os.path.join(REPO, "tools/train.sh"), os.path.join(REPO, "tools/train_net.py"), CONFIG, "2",
           f"train.output_dir={output_dir}", "train.dist.tensor_parallel_size=2"]
    nodes = [
        subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, NODE="2", NODE_RANK=str(rank), PORT=port,
                                                 ADDR="127.0.0.1", OMP_NUM_THREADS="1"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    _assert_same_curve(losses_by_iter(output_dir), losses_by_iter(runs["dp2_tp2"]), range(20), "two nodes")


@pytest.mark.parametrize("resumed", ["resume_dp1_tp1", "resume_dp1_tp2_pp2"])
def test_checkpoint_resumes_under_another_layout(runs, resumed):
    _assert_same_curve(losses_by_iter(runs[resumed]), losses_by_iter(runs["dp2_tp2_pp2"]), range(10, 20), resumed)


def test_pipeline_errors_are_one_line(tmp_path):
    proc = train_sh(2, str(tmp_path / "out"), "train.dist.pipeline_parallel_size=2", "train.global_batch_size=4",
                    check=False, config=CONFIG)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "needs at least pipeline_parallel_size (2) micro-batches" in proc.stderr
