"""Train several configs one after the other in this one process, as `tools/train_net.py`
would each (same `main`, same argument parser), to save a process start per config.

    python tests/helpers/train_in_one_process.py RUNS.json

RUNS.json is a list of [config_file, output_dir, [key=value, ...]]. A run that fails
leaves its traceback in `output_dir/run_error.txt`, and the next run starts anyway.
"""
import json
import os
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

from libai.config import default_argument_parser  # noqa: E402
from libai.utils import distributed as dist  # noqa: E402
from train_net import main  # noqa: E402


def run_all(runs: list) -> None:
    """Train each (config, output_dir, overrides) of `runs` in order."""
    for config, output_dir, overrides in runs:
        args = default_argument_parser().parse_args(
            ["--config-file", config, f"train.output_dir={output_dir}", *overrides]
        )
        try:
            main(args)
        except Exception:
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, "run_error.txt"), "w") as f:
                f.write(traceback.format_exc())
        # Each run starts its own process group, as a new process would.
        dist.shutdown_process_groups()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        run_all(json.load(f))
