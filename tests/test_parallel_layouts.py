"""The tiny GPT trains the same model under every data/tensor/pipeline-parallel layout.

Each run is a real `tools/train.sh` launch of `tests/configs/tiny_gpt.py` (global batch 16,
micro batch 4, 20 AdamW steps); the assertions read `metrics.json`.
"""
import os
import re
import shutil
import subprocess

import pytest

from tests.helpers.dist import free_port
from tests.helpers.runs import REPO, losses_by_iter, read_metrics, train_sh

CONFIG = os.path.join(REPO, "tests/configs/tiny_gpt.py")

# name: (processes, overrides)
EVAL = "train.evaluation.enabled=True"  # perplexity at iterations 9 and 19

EXACT = "train.dist.exact_reduction=True"

LAYOUTS = {
    "dp1_tp1": (1, [EVAL]),
    "dp2_tp1": (2, []),
    # The exact float64 reduction: the same losses bit for bit, however the batch is split
    # over data-parallel ranks and micro-batches.
    "dp1_tp1_exact": (1, [EXACT]),
    "dp2_exact": (2, [EXACT]),
    "dp1_tp2": (2, ["train.dist.tensor_parallel_size=2"]),
    "dp2_tp2": (4, ["train.dist.tensor_parallel_size=2"]),
    "dp1_tp2_act_ckpt": (2, ["train.dist.tensor_parallel_size=2", "train.activation_checkpoint.enabled=True"]),
    "dp1_tp1_pp2_gpipe": (2, ["train.dist.pipeline_parallel_size=2", "train.pipeline.schedule=GPipe"]),
    "dp1_tp1_pp2_interleaved": (2, ["train.dist.pipeline_parallel_size=2", "train.pipeline.schedule=Interleaved1F1B", EVAL]),
    "dp1_tp2_pp2": (4, ["train.dist.tensor_parallel_size=2", "train.dist.pipeline_parallel_size=2"]),
    "dp2_tp2_pp2": (8, ["train.dist.tensor_parallel_size=2", "train.dist.pipeline_parallel_size=2", EVAL]),
    "dp2_tp2_bf16": (4, ["train.dist.tensor_parallel_size=2", "train.amp.enabled=True"]),
    "dp1_tp2_fp16": (2, ["train.dist.tensor_parallel_size=2", "train.amp.enabled=True", "train.amp.dtype=float16"]),
    # Graph mode (torch.compile of the model) for a subset: compiling is slow on CPU.
    "dp1_tp2_graph": (2, ["train.dist.tensor_parallel_size=2", "graph.enabled=True", EVAL]),
    **{
        f"dp2_tp2_zero{stage}": (
            4,
            ["train.dist.tensor_parallel_size=2", "train.zero_optimization.enabled=True", f"train.zero_optimization.stage={stage}"],
        )
        for stage in (1, 2, 3)
    },
    # ZeRO under pipeline parallelism: the stage module is the FSDP root.
    "dp2_pp2_zero1_gpipe": (4, ["train.dist.pipeline_parallel_size=2", "train.pipeline.schedule=GPipe",
                                "train.zero_optimization.enabled=True", "train.zero_optimization.stage=1"]),
    "dp2_pp2_zero2": (4, ["train.dist.pipeline_parallel_size=2",
                          "train.zero_optimization.enabled=True", "train.zero_optimization.stage=2"]),
    "dp2_tp2_pp2_zero3_act_ckpt": (8, ["train.dist.tensor_parallel_size=2", "train.dist.pipeline_parallel_size=2",
                                       "train.zero_optimization.enabled=True", "train.zero_optimization.stage=3",
                                       "train.activation_checkpoint.enabled=True"]),
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
    # Saved under dp2·tp2·pp2 after 10 steps, resumed under 1·1·1 and under dp1·tp2·pp2; and
    # saved by one process (plain tensors), resumed under dp2·tp2 (DTensors).
    resumes = (
        ("resume_dp1_tp1", "dp2_tp2_pp2", LAYOUTS["dp1_tp1"]),
        ("resume_dp1_tp2_pp2", "dp2_tp2_pp2", LAYOUTS["dp1_tp2_pp2"]),
        ("resume_dp2_tp2_from_one_process", "dp1_tp1", LAYOUTS["dp2_tp2"]),
    )
    for name, saved_by, (nproc, overrides) in resumes:
        out[name] = str(root / name)
        os.makedirs(out[name])
        shutil.copytree(os.path.join(out[saved_by], "model_0000009"), os.path.join(out[name], "model_0000009"))
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


@pytest.mark.parametrize("layout", [name for name in LAYOUTS if name != "dp1_tp1" and "16" not in name])
def test_layout_trains_the_one_process_model(runs, layout):
    reference = losses_by_iter(runs["dp1_tp1"])
    assert reference[19] < 0.8 * reference[0]  # it does learn
    _assert_same_curve(losses_by_iter(runs[layout]), reference, range(20), layout)


def test_the_exact_reduction_gives_the_one_process_losses_bit_for_bit(runs):
    # Data parallelism only: tensor parallelism splits the forward's own sums.
    reference, exact = losses_by_iter(runs["dp1_tp1_exact"]), losses_by_iter(runs["dp2_exact"])
    assert sorted(exact) == list(range(20))
    assert exact == reference
    # The default (float32 buckets) stays within the layout bounds of the exact one.
    _assert_same_curve(losses_by_iter(runs["dp1_tp1"]), reference, range(20), "default vs exact")


def _perplexities(output_dir):
    return {m["iteration"]: m["PPL"] for m in read_metrics(output_dir) if "PPL" in m}


@pytest.mark.parametrize("layout", ["dp1_tp1_pp2_interleaved", "dp2_tp2_pp2", "dp1_tp2_graph"])
def test_evaluation_through_the_pipeline_equals_one_process(runs, layout):
    reference = _perplexities(runs["dp1_tp1"])
    assert sorted(reference) == [9, 19]
    for it, ppl in _perplexities(runs[layout]).items():
        assert ppl == pytest.approx(reference[it], rel=1e-5), (layout, it)


@pytest.mark.parametrize(
    "trained, nproc, layout",
    [("dp2_tp2_pp2", 4, "dp1_tp2_pp2"), ("dp1_tp2_graph", 2, "dp1_tp2_graph")],
)
def test_eval_only_equals_the_evaluation_at_the_end_of_training(runs, tmp_path, trained, nproc, layout):
    """`--eval-only` goes through training's model dispatch: on dp1·tp2·pp2 with the
    dp2·tp2·pp2 final weights (the pipeline's eval model), and in graph mode (the eval graph)."""
    weights = os.path.join(runs[trained], "model_final")
    proc = _train(nproc, str(tmp_path / "eval"), "--eval-only", f"train.load_weight={weights}", *LAYOUTS[layout][1])
    match = re.search(r"'PPL': ([0-9.e+]+)", proc.stdout + proc.stderr)
    assert match, proc.stderr[-3000:]
    assert float(match.group(1)) == pytest.approx(_perplexities(runs[trained])[19], rel=1e-6)


@pytest.mark.parametrize("layout", ["dp2_tp2_bf16", "dp1_tp2_fp16"])
def test_amp_follows_fp32_within_its_precision(runs, layout):
    """Autocast keeps 8 (bf16) or 11 (fp16, with loss scaling) mantissa bits: the curve
    stays within 2% of fp32."""
    reference, amp = losses_by_iter(runs["dp1_tp1"]), losses_by_iter(runs[layout])
    assert sorted(amp) == list(range(20))
    for it in range(20):
        assert amp[it] == pytest.approx(reference[it], rel=2e-2), (layout, it)


@pytest.mark.parametrize("processes_per_node", [(2, 2), (1, 3)])
def test_two_nodes_train_like_four_local_processes(runs, tmp_path, processes_per_node):
    """`NODE=2 NODE_RANK=0|1 tools/train.sh ... N` on one machine equals dp2·tp2 on 4
    processes, also with nodes of unequal size (HetSeq's 1 + 3)."""
    output_dir = str(tmp_path / "two_nodes")
    port = str(free_port())
    nodes = []
    for rank, nproc in enumerate(processes_per_node):
        cmd = ["bash", os.path.join(REPO, "tools/train.sh"), os.path.join(REPO, "tools/train_net.py"), CONFIG,
               str(nproc), f"train.output_dir={output_dir}", "train.dist.tensor_parallel_size=2"]
        env = dict(os.environ, NODE="2", NODE_RANK=str(rank), PORT=port, ADDR="127.0.0.1", OMP_NUM_THREADS="1")
        nodes.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    ours, reference = losses_by_iter(output_dir), losses_by_iter(runs["dp2_tp2"])
    _assert_same_curve(ours, reference, range(20), "two nodes")
    assert all(ours[i] == pytest.approx(reference[i], rel=1e-6) for i in range(20))


@pytest.mark.parametrize(
    "resumed, saved_by",
    [("resume_dp1_tp1", "dp2_tp2_pp2"), ("resume_dp1_tp2_pp2", "dp2_tp2_pp2"), ("resume_dp2_tp2_from_one_process", "dp1_tp1")],
)
def test_checkpoint_resumes_under_another_layout(runs, resumed, saved_by):
    _assert_same_curve(losses_by_iter(runs[resumed]), losses_by_iter(runs[saved_by]), range(10, 20), resumed)


def test_pipeline_errors_are_one_line(tmp_path):
    proc = train_sh(2, str(tmp_path / "out"), "train.dist.pipeline_parallel_size=2", "train.global_batch_size=4",
                    check=False, config=CONFIG)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "needs at least pipeline_parallel_size (2) micro-batches" in proc.stderr

