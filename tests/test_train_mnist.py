"""End to end: tools/train.sh + tools/train_net.py on the MNIST project, on 1 to 4 processes.

Each run is a real torchrun launch of the user-facing tools; the assertions read what a
user reads (metrics.json, checkpoints, the error line).
"""
import os
import shutil

import pytest
import torch

from tests.helpers.runs import losses_by_iter, read_metrics, train_sh

# 20 iterations with a global batch of 64: 1 process accumulates 4 micro-batches of 16,
# 2 processes 2 each, 4 processes 1 each.
SHORT_RUN = [
    "train.train_epoch=0",
    "train.train_iter=20",
    "train.train_micro_batch_size=16",
    "train.global_batch_size=64",
    "train.num_accumulation_steps=None",
    "train.log_period=1",
    "train.evaluation.enabled=False",
    "train.checkpointer.period=10",
]


def final_weights(output_dir: str, name: str = "model_final") -> dict:
    from libai.utils.checkpoint import Checkpointer
    from projects.mnist.modeling.model import MNISTNet

    model = MNISTNet()
    Checkpointer(model, output_dir).load(os.path.join(output_dir, name), checkpointables=[])
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The short runs every test below reads: 1, 2 and 4 processes, and a resumed run."""
    root = tmp_path_factory.mktemp("mnist")
    out = {n: str(root / f"np{n}") for n in (1, 2, 4)}
    for nproc, output_dir in out.items():
        train_sh(nproc, output_dir, *SHORT_RUN)
    # Resume: start from the checkpoint taken after 10 of the 20 iterations. The second
    # copy is named as BestCheckpointer names it: the iteration comes from inside.
    for name, nproc, checkpoint in (("resume1", 1, "model_0000009"), ("resume2", 2, "model_best")):
        out[name] = str(root / name)
        os.makedirs(out[name])
        shutil.copytree(os.path.join(out[1], "model_0000009"), os.path.join(out[name], checkpoint))
        with open(os.path.join(out[name], "last_checkpoint"), "w") as f:
            f.write(checkpoint)
        train_sh(nproc, out[name], *SHORT_RUN, resume=True)
    return out


def test_losses_equal_on_1_2_4_processes(runs):
    reference = losses_by_iter(runs[1])
    assert sorted(reference) == list(range(20))
    assert reference[19] < reference[0]
    for nproc in (2, 4):
        losses = losses_by_iter(runs[nproc])
        assert sorted(losses) == list(range(20))
        for it in range(20):
            assert losses[it] == pytest.approx(reference[it], rel=1e-5), (nproc, it)


def test_resume_continues_as_if_never_stopped(runs):
    reference = losses_by_iter(runs[1])
    resumed = losses_by_iter(runs["resume1"])
    assert sorted(resumed) == list(range(10, 20))
    for it in range(10, 20):
        assert resumed[it] == reference[it], it
    straight, continued = final_weights(runs[1]), final_weights(runs["resume1"])
    for key in straight:
        assert torch.equal(straight[key], continued[key]), key


def test_resume_under_another_layout(runs):
    """A 1-process checkpoint resumed on 2 processes sees the same batches and steps."""
    reference = losses_by_iter(runs[1])
    resumed = losses_by_iter(runs["resume2"])
    for it in range(10, 20):
        assert resumed[it] == pytest.approx(reference[it], rel=1e-5), it


def test_output_directory_layout(runs):
    files = set(os.listdir(runs[1]))
    assert {"config.yaml", "log.txt", "metrics.json", "last_checkpoint", "model_final"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    # max_to_keep=2 periodic checkpoints; 20 iterations with period 10 give 9 and 19.
    assert {"model_0000009", "model_0000019"} <= files
    assert "log.txt.rank1" in os.listdir(runs[2])
    from libai.config import LazyConfig

    saved = LazyConfig.load(os.path.join(runs[2], "config.yaml"))
    assert saved.train.dist.data_parallel_size == 2
    assert saved.train.num_accumulation_steps == 2
    assert saved.train.train_iter == 20


def test_metrics_json_has_lr_and_loss_terms(runs):
    metrics = read_metrics(runs[1])
    assert all({"iteration", "total_loss", "losses", "lr"} <= set(m) for m in metrics)
    assert all(m["losses"] == pytest.approx(m["total_loss"]) for m in metrics)


# ---- errors a user can cause --------------------------------------------------------


def _assert_one_clear_line(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_unknown_override_key_is_one_line(tmp_path):
    proc = train_sh(1, str(tmp_path / "out"), "train.train_itr=5", check=False)
    _assert_one_clear_line(proc, "train.train_itr", "train.train_iter")


def test_layout_that_does_not_divide_world_is_one_line(tmp_path):
    proc = train_sh(2, str(tmp_path / "out"), "train.dist.tensor_parallel_size=4", check=False)
    _assert_one_clear_line(proc, "tensor_parallel_size", "world size (2)")


def test_missing_data_directory_is_one_line(tmp_path):
    missing = str(tmp_path / "no-such-mnist")
    proc = train_sh(1, str(tmp_path / "out"), f"dataloader.train.dataset.0.root={missing}", check=False)
    _assert_one_clear_line(proc, missing)


def test_unreadable_checkpoint_is_one_line_and_left_alone(tmp_path):
    output_dir = tmp_path / "out"
    bad = output_dir / "model_0000009"
    bad.mkdir(parents=True)
    (bad / ".metadata").write_bytes(b"not a checkpoint")
    (output_dir / "last_checkpoint").write_text("model_0000009")
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    proc = train_sh(1, str(output_dir), *SHORT_RUN, resume=True, check=False)
    _assert_one_clear_line(proc, "model_0000009")
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before
    assert (output_dir / "last_checkpoint").read_text() == "model_0000009"


def test_amp_runs_in_bfloat16_on_cpu(runs, tmp_path):
    """`train.amp.enabled=True` trains under bf16 autocast on CPU instead of failing.

    bf16 keeps 8 bits of mantissa, so the curve follows fp32 only loosely: within 2%.
    """
    output_dir = str(tmp_path / "amp")
    train_sh(1, output_dir, *SHORT_RUN, "train.amp.enabled=True")
    fp32, bf16 = losses_by_iter(runs[1]), losses_by_iter(output_dir)
    assert sorted(bf16) == list(range(20))
    assert bf16[0] != fp32[0]  # autocast really ran
    for it in range(20):
        assert bf16[it] == pytest.approx(fp32[it], rel=2e-2), it
