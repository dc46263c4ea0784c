"""Launch the user-facing tools the way a user does and read what they write."""
import json
import os
import subprocess

from tests.helpers.dist import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MNIST_CONFIG = os.path.join(REPO, "projects/mnist/config.py")


def train_sh(nproc: int, output_dir: str, *overrides: str, resume: bool = False, check: bool = True, config: str = MNIST_CONFIG):
    """Run `bash tools/train.sh tools/train_net.py config nproc ...`; return the process.

    Flags among `overrides` (`--eval-only`, ...) are passed before the key=value pairs.
    """
    cmd = ["bash", os.path.join(REPO, "tools/train.sh"), os.path.join(REPO, "tools/train_net.py"), config, str(nproc)]
    flags = [o for o in overrides if o.startswith("--")] + (["--resume"] if resume else [])
    cmd += flags + [f"train.output_dir={output_dir}"] + [o for o in overrides if not o.startswith("--")]
    env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_metrics(output_dir: str) -> list:
    """The records of `output_dir/metrics.json`, one dict per logged iteration."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def losses_by_iter(output_dir: str) -> dict:
    """`{iteration: total_loss}` from `metrics.json`."""
    return {m["iteration"]: m["total_loss"] for m in read_metrics(output_dir) if "total_loss" in m}
