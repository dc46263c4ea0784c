"""Faults lose nothing: real processes killed with SIGKILL at random moments (one of them
inside a checkpoint write), preempted with SIGTERM, restarted by torchrun, and a loss
that turns NaN. Every resumed run ends with the weights of the uninterrupted one, bit
for bit, and logs each iteration's loss once, equal to the uninterrupted loss."""
import json
import os
import random
import signal
import subprocess
import time

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.helpers.dist import free_port
from tests.helpers.runs import REPO, losses_by_iter, read_metrics, train_sh

CONFIG = os.path.join(REPO, "tests/configs/tiny_gpt.py")
# Dropout on, evaluation and checkpoints every few steps: a kill can land anywhere.
RUN = [
    "+model.dropout=0.1",
    "train.train_iter=24",
    "train.checkpointer.period=3",
    "train.evaluation.enabled=True",
    "train.evaluation.eval_period=6",
]
FP16 = ["train.amp.enabled=True", "train.amp.dtype=float16"]
VARIANTS = {"dp2_dropout": (2, RUN), "dropout_fp16": (1, RUN + FP16)}


def _launch(nproc, output_dir, overrides, resume=True, env=None):
    """Start `tools/train.sh` in its own session (so the whole launch can be killed)."""
    cmd = ["bash", os.path.join(REPO, "tools/train.sh"), os.path.join(REPO, "tools/train_net.py"), CONFIG, str(nproc)]
    cmd += (["--resume"] if resume else []) + [f"train.output_dir={output_dir}", *overrides]
    env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _last_logged_iteration(output_dir):
    try:
        with open(os.path.join(output_dir, "metrics.json")) as f:
            lines = f.read().splitlines()
        return json.loads(lines[-1])["iteration"] if lines else -1
    except (OSError, ValueError, KeyError):
        return -1


def _checkpoint_writes(output_dir):
    try:
        return {e for e in os.listdir(output_dir) if e.startswith(".tmp-")}
    except OSError:
        return set()


def _workers(launcher_pid):
    """The worker processes torchrun started (each in a session of its own)."""
    found = subprocess.run(["pgrep", "-P", str(launcher_pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _kill_everything(proc):
    """SIGKILL the launcher, then its workers: a machine that dies."""
    workers = _workers(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()
    for pid in workers:  # wait until the kernel has really removed them
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.01)


def _kill_when(proc, output_dir, ready, timeout=120):
    """SIGKILL the whole launch as soon as `ready()` holds; return whether it was killed."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            _kill_everything(proc)
            return True
        time.sleep(0.002)
    proc.communicate()
    return False


def _final_state(output_dir, tmp_path):
    """Model and optimizer tensors of `output_dir/model_final`, as plain tensors."""
    path = str(tmp_path / f"final-{os.path.basename(output_dir)}.pt")
    dcp_to_torch_save(os.path.join(output_dir, "model_final"), path)
    state = torch.load(path, weights_only=True)
    return {key: state[key] for key in ("model", "optimizer", "grad_scaler") if key in state}


def _assert_bitwise_equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_bitwise_equal(a[key], b[key], f"{where}.{key}")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Each variant trained once without interruption."""
    out = {}
    for name, (nproc, overrides) in VARIANTS.items():
        out[name] = str(tmp_path_factory.mktemp("reference") / name)
        train_sh(nproc, out[name], *overrides, config=CONFIG)
    return out


def _assert_continues_like(reference, output_dir, tmp_path):
    iterations = [m["iteration"] for m in read_metrics(output_dir) if "total_loss" in m]
    assert iterations == sorted(set(iterations)), "an iteration was logged twice"
    assert losses_by_iter(output_dir) == losses_by_iter(reference)
    _assert_bitwise_equal(_final_state(output_dir, tmp_path), _final_state(reference, tmp_path))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kill_9_at_random_moments_resumes_bit_for_bit(references, tmp_path, variant):
    nproc, overrides = VARIANTS[variant]
    seed = int(os.environ.get("LIBAI_KILL_SEED", time.time_ns() % 2**31))
    print(f"kill points drawn with seed {seed} (LIBAI_KILL_SEED={seed} repeats them)")
    rng = random.Random(seed)
    output_dir = str(tmp_path / "run")
    in_write = rng.randrange(5)  # which of the 5 kills waits for a checkpoint write
    kills = []
    for round_ in range(5):
        proc = _launch(nproc, output_dir, overrides)  # --resume on a fresh directory starts at 0
        if round_ == in_write:
            before = _checkpoint_writes(output_dir)
            killed = _kill_when(proc, output_dir, lambda: bool(_checkpoint_writes(output_dir) - before))
            kills.append(("checkpoint write", killed))
        else:
            target = _last_logged_iteration(output_dir) + rng.randint(1, 5)
            delay = rng.uniform(0, 0.05)
            reached = {}

            def ready():
                if "at" not in reached and _last_logged_iteration(output_dir) >= target:
                    reached["at"] = time.time()
                return "at" in reached and time.time() - reached["at"] >= delay

            kills.append((f"after iteration {target} + {delay * 1000:.0f} ms", _kill_when(proc, output_dir, ready)))
    print("kills:", kills)
    assert sum(killed for _, killed in kills) >= 4, kills
    proc = _launch(nproc, output_dir, overrides)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    _assert_continues_like(references[variant], output_dir, tmp_path)


def test_sigterm_saves_that_iteration_and_resume_continues(references, tmp_path):
    """SIGTERM to the launcher (as Kubernetes sends it): every rank finishes its step, one
    checkpoint is written, the run exits 143 saying how to resume."""
    nproc, overrides = VARIANTS["dp2_dropout"]
    output_dir = str(tmp_path / "run")
    proc = _launch(nproc, output_dir, overrides, resume=False)
    deadline = time.time() + 120
    while _last_logged_iteration(output_dir) < 7 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    start = time.time()
    proc.send_signal(signal.SIGTERM)  # the launcher is the session leader's exec'd python
    out, err = proc.communicate(timeout=120)
    print(f"SIGTERM to exit: {time.time() - start:.2f} s")
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped = [line for line in err.splitlines() if line.startswith("stopped: preempted by SIGTERM")]
    assert len(stopped) == 1 and "run the same command with --resume to continue" in stopped[0], err[-3000:]
    iteration = int(stopped[0].split("after iteration ")[1].split(":")[0])
    with open(os.path.join(output_dir, "last_checkpoint")) as f:
        assert f.read() == f"model_{iteration:07d}"
    assert "Traceback" not in err
    proc = _launch(nproc, output_dir, overrides)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    _assert_continues_like(references["dp2_dropout"], output_dir, tmp_path)


def test_torchrun_restarts_a_killed_worker_and_the_run_resumes(references, tmp_path):
    nproc, overrides = VARIANTS["dp2_dropout"]
    output_dir = str(tmp_path / "run")
    proc = _launch(nproc, output_dir, overrides, env={"MAX_RESTARTS": "1"})
    deadline = time.time() + 120
    while _last_logged_iteration(output_dir) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.kill(max(_workers(proc.pid)), signal.SIGKILL)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        _kill_everything(proc)
        raise
    assert proc.returncode == 0, err[-3000:]
    _assert_continues_like(references["dp2_dropout"], output_dir, tmp_path)


# log_period=5: the losses of iteration 12 are read (and found NaN) only before the
# checkpoint of iteration 14, which is then not written.
@pytest.mark.parametrize("log_period", [1, 5])
def test_a_nan_loss_stops_the_run_and_saves_nothing_after_it(tmp_path, log_period):
    config = tmp_path / "nan_config.py"
    config.write_text(
        "from libai.config import LazyCall, LazyConfig\n"
        "from tests.helpers.tiny_gpt import TinyGPTTurningNaN\n"
        f"_base = LazyConfig.load({CONFIG!r})\n"
        "train, optim, graph, dataloader = _base.train, _base.optim, _base.graph, _base.dataloader\n"
        "# 4 micro-batches per step on one process: iteration 12 is forward call 48.\n"
        "model = LazyCall(TinyGPTTurningNaN)(nan_from_call=48, vocab_size=64, hidden_size=32, num_layers=4,\n"
        "                                    num_attention_heads=4, max_seq_length=16)\n"
    )
    output_dir = tmp_path / "run"
    proc = train_sh(1, str(output_dir), "train.checkpointer.period=5", f"train.log_period={log_period}",
                    check=False, config=str(config))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: non-finite loss at iteration 12 (lm_loss = nan)"), errors
    assert "Traceback" not in proc.stderr
    assert (output_dir / "last_checkpoint").read_text() == "model_0000009"
    assert sorted(p.name for p in output_dir.glob("model_*")) == ["model_0000004", "model_0000009"]
    assert max(losses_by_iter(str(output_dir))) == 11
