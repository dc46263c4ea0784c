#!/usr/bin/env python
"""Train (or evaluate) a model described by a LiBai config.

    python tools/train_net.py --config-file projects/mnist/config.py [--resume] [opts...]
    bash tools/train.sh tools/train_net.py projects/mnist/config.py 8
"""
import os
import sys

# As in LiBai, project code is imported as `projects.<name>...`: put the repository root
# (the folder that holds tools/ and projects/) on the path, wherever we are started from.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from libai.config import LazyConfig
from libai.engine import DefaultTrainer, default_argument_parser, default_setup
from libai.engine.debug import run_debug
from libai.engine.default import run_with_clear_errors


def main(args) -> None:
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)

    if args.debug:
        run_debug(cfg)
        return

    if args.eval_only:
        DefaultTrainer.evaluate_only(cfg, resume=args.resume)
        return

    trainer = DefaultTrainer(cfg)
    trainer.train()


if __name__ == "__main__":
    run_with_clear_errors(main, default_argument_parser().parse_args())
