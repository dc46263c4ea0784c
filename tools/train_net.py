#!/usr/bin/env python
"""Train (or evaluate) a model described by a LiBai config.

    python tools/train_net.py --config-file projects/mnist/config.py [--resume] [opts...]
    bash tools/train.sh tools/train_net.py projects/mnist/config.py 8
"""
import logging
import os
import sys

# As in LiBai, project code is imported as `projects.<name>...`: put the repository root
# (the folder that holds tools/ and projects/) on the path, wherever we are started from.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from libai.config import LazyConfig, try_get_key
from libai.engine import DefaultTrainer, default_argument_parser, default_setup
from libai.engine.default import run_with_clear_errors
from libai.engine.pipeline import build_pipeline
from libai.utils import distributed as dist
from libai.utils.checkpoint import Checkpointer

logger = logging.getLogger("libai." + __name__)


def main(args) -> None:
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)

    if args.eval_only:
        tokenizer = DefaultTrainer.build_tokenizer(cfg)
        model = DefaultTrainer.build_model(cfg)
        Checkpointer(model, save_dir=cfg.train.output_dir).resume_or_load(
            cfg.train.load_weight, resume=args.resume
        )
        if dist.get_pipeline_parallel_size() > 1:
            # Each rank keeps its stage; batches flow through the stages forward only.
            model = build_pipeline(model, num_microbatches=1, schedule_name="GPipe").eval_model()
        elif try_get_key(cfg, "graph.enabled", default=False):
            model = DefaultTrainer.build_graph(cfg, model, is_train=False)
        test_loader = DefaultTrainer.build_test_loader(cfg, tokenizer)
        if not test_loader:
            logger.info("No dataset in dataloader.test: set one to evaluate")
        DefaultTrainer.test(cfg, test_loader, model)
        return

    trainer = DefaultTrainer(cfg)
    trainer.train()


if __name__ == "__main__":
    run_with_clear_errors(main, default_argument_parser().parse_args())
