"""The command line of LiBai's tools (`tools/train_net.py` and projects' own scripts).

LiBai's configs and projects import it as `from libai.config import default_argument_parser`.
"""
from __future__ import annotations

import argparse
from typing import Optional


class _OneLineErrorParser(argparse.ArgumentParser):
    """argparse, with a command-line mistake reported like every other user error: one
    `error: ...` line (naming --help) and status 2, instead of the usage block first."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of LiBai's tools: `--config-file`, `--resume`, `--eval-only`,
    `--fast-dev-run`, then `key=value` config overrides."""
    parser = _OneLineErrorParser(
        epilog=epilog
        or (
            "Examples:\n"
            "  bash tools/train.sh tools/train_net.py projects/mnist/config.py 8\n"
            "  python tools/train_net.py --config-file projects/mnist/config.py "
            "train.train_iter=100 train.output_dir=output/try\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from the last checkpoint in train.output_dir (model, optimizer, "
        "scheduler, iteration and data position)",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate the model, no training")
    parser.add_argument(
        "--fast-dev-run",
        action="store_true",
        help="a quick check: 20 iterations, evaluation every 10, log every iteration",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="a fast dev run (a few iterations and one evaluation, nothing kept), then an overfit run on "
        "train.overfit_batches batches (1 if unset) with a verdict: does the loss fall, which parameters "
        "receive no gradient",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides as key=value, e.g. train.train_iter=100 train.dist.tensor_parallel_size=2",
    )
    return parser
