#!/usr/bin/env python
"""Iterations per second of the MNIST model: DefaultTrainer vs a hand-written loop.

Both train the same model (same initial weights), on the same data loader, with the same
optimizer (AdamW, LiBai's default parameter groups), gradient clipping and LR schedule.
The trainer runs with its default hooks (timer, LR scheduler, checkpointer, writers with
console line, metrics.json and TensorBoard every `log_period`). Rounds alternate between
the two so that machine noise hits both alike; the ratio of medians is printed.

    OMP_NUM_THREADS=1 python benchmarks/trainer_overhead.py [--rounds 7 --iters 100]
"""
import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from libai.config import LazyConfig  # noqa: E402
from libai.engine import DefaultTrainer, default_setup  # noqa: E402
from libai.engine.trainer import _clip_groups  # noqa: E402
from libai.utils.events import EventStorage  # noqa: E402


def build_trainer(output_dir: str, total_iters: int) -> DefaultTrainer:
    cfg = LazyConfig.load(os.path.join(REPO, "projects/mnist/config.py"))
    cfg = LazyConfig.apply_overrides(
        cfg,
        [
            f"train.output_dir={output_dir}",
            "train.train_epoch=0",
            f"train.train_iter={total_iters}",
            "train.evaluation.enabled=False",
            f"train.checkpointer.period={total_iters * 10}",
        ],
    )
    default_setup(cfg, argparse.Namespace(resume=False, fast_dev_run=False, config_file=""))
    return DefaultTrainer(cfg)


def plain_loop(model, optimizer, scheduler, loader, iters: int) -> float:
    """The loop a user writes by hand; returns seconds for `iters` iterations."""
    data = iter(loader)
    clip = _clip_groups(optimizer)
    start = time.perf_counter()
    for _ in range(iters):
        batch = next(data)
        images, labels = batch.get("images").tensor, batch.get("labels").tensor
        loss = model(images=images, labels=labels)["losses"]
        loss.backward()
        for params, max_norm, norm_type in clip:
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        loss.item()  # the hand loop also reads its loss, as any loop that prints it does
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))

    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build_trainer(output_dir, total_iters=args.rounds * args.iters + 1)
        # The hand loop gets its own copy of the same starting state.
        model = copy.deepcopy(trainer.model)
        optimizer = DefaultTrainer.build_optimizer(trainer.cfg, model)
        scheduler = DefaultTrainer.build_lr_scheduler(trainer.cfg, optimizer)
        plain_loader = DefaultTrainer.build_train_loader(trainer.cfg)[0]

        def trainer_loop(first: int, iters: int) -> float:
            """The trainer's own iterations with all hooks; returns seconds."""
            start = time.perf_counter()
            for trainer.iter in range(first, first + iters):
                trainer.before_step()
                trainer.run_step()
                trainer.after_step()
            return time.perf_counter() - start

        trainer_rates, plain_rates = [], []
        with EventStorage(0) as trainer.storage:
            trainer.before_train()
            # Warm up both (allocator, first-call costs) before measuring.
            plain_loop(model, optimizer, scheduler, plain_loader, 10)
            trainer_loop(0, 10)
            next_iter = 10
            for round_idx in range(args.rounds):
                order = ("trainer", "plain") if round_idx % 2 == 0 else ("plain", "trainer")
                for which in order:
                    if which == "plain":
                        plain_rates.append(args.iters / plain_loop(model, optimizer, scheduler, plain_loader, args.iters))
                    else:
                        trainer_rates.append(args.iters / trainer_loop(next_iter, args.iters))
                        next_iter += args.iters
            trainer.after_train()

    trainer_its = statistics.median(trainer_rates)
    plain_its = statistics.median(plain_rates)
    print(f"batch {trainer.cfg.train.train_micro_batch_size}, {args.rounds} rounds x {args.iters} iterations, "
          f"torch threads {torch.get_num_threads()}")
    print(f"plain loop     : {plain_its:8.1f} it/s (median)")
    print(f"DefaultTrainer : {trainer_its:8.1f} it/s (median)")
    print(f"ratio trainer/plain = {trainer_its / plain_its:.3f}  (required >= 0.95)")


if __name__ == "__main__":
    main()
