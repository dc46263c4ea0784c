"""`--debug` (a fast dev run, then an overfit run with a verdict) and `train.overfit_batches`."""
import os
import subprocess
import sys

from libai.engine.debug import DebugVerdict, OverfitBatches
from tests.helpers.runs import MNIST_CONFIG, REPO

TINY_GPT = os.path.join(REPO, "tests/configs/tiny_gpt.py")


def _debug(config, output_dir, *overrides):
    cmd = [sys.executable, os.path.join(REPO, "tools/train_net.py"), "--config-file", config, "--debug",
           f"train.output_dir={output_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if not line.startswith("[")]


def test_debug_on_mnist_passes_and_keeps_nothing(tmp_path):
    lines = _debug(MNIST_CONFIG, str(tmp_path / "out"))
    assert lines[0].startswith("debug verdict: PASS: the overfit loss went from"), lines
    assert lines[1] == "every parameter received a gradient"
    assert not (tmp_path / "out").exists()


def test_debug_names_the_parameters_of_a_detached_layer(tmp_path):
    config = tmp_path / "detached.py"
    config.write_text(
        "from libai.config import LazyCall, LazyConfig\n"
        "from tests.helpers.tiny_gpt import TinyGPTWithDetachedLayer\n"
        f"_base = LazyConfig.load({TINY_GPT!r})\n"
        "train, optim, graph, dataloader = _base.train, _base.optim, _base.graph, _base.dataloader\n"
        "model = LazyCall(TinyGPTWithDetachedLayer)(vocab_size=64, hidden_size=32, num_layers=4,\n"
        "                                           num_attention_heads=4, max_seq_length=16)\n"
    )
    lines = _debug(str(config), str(tmp_path / "out"), "train.evaluation.enabled=True")
    assert lines[0].startswith("debug verdict: FAIL"), lines
    frozen = lines[1].removeprefix("parameters that received no gradient: ").split(", ")
    assert "position_embeddings.weight" in frozen and "layers.0.self_attention.query_key_value.weight" in frozen
    assert not any(name.startswith(("layers.1.", "word_embeddings")) for name in frozen), frozen


def test_overfit_batches_repeats_the_first_k_batches():
    loader = OverfitBatches(iter_of(range(10)), 3)
    it = iter(loader)
    assert [next(it) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert loader.dataset == "data"


def test_verdict_lines():
    assert DebugVerdict(2.0, 0.1).lines()[0].startswith("debug verdict: PASS")
    assert DebugVerdict(2.0, 1.0).lines()[0].startswith("debug verdict: FAIL")
    assert DebugVerdict(2.0, 0.1, ["w"]).lines() == [
        "debug verdict: FAIL: the overfit loss went from 2 to 0.1 (0.05 of the first; a model that learns reaches 0.1)",
        "parameters that received no gradient: w",
    ]


class iter_of:
    """A loader stand-in: iterable, with a `dataset` attribute."""

    dataset = "data"

    def __init__(self, values):
        self.values = values

    def __iter__(self):
        return iter(self.values)


def test_debug_runs_make_no_wandb_run():
    from libai.config import get_config
    from libai.engine.debug import _debug_cfg

    cfg = get_config("common/train.py")
    cfg.train.wandb.enabled = True
    assert _debug_cfg(cfg, 5, "/tmp/x").train.wandb.enabled is False
    assert cfg.train.wandb.enabled is True  # the user's config is left alone
