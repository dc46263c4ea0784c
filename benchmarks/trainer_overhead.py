#!/usr/bin/env python
"""Iterations per second of the MNIST model: DefaultTrainer vs a hand-written loop.

Both train the same model (same initial weights), on the same data loader, with the same
optimizer (AdamW, LiBai's default parameter groups), gradient clipping and LR schedule.
The trainer runs with its default hooks (timer, LR scheduler, checkpointer, writers with
console line, metrics.json and TensorBoard every `log_period`) and, as in `train()`, with the
heap that existed before training frozen out of the garbage collector (`train.gc_freeze`). Rounds alternate between
the two so that machine noise hits both alike; the ratio of medians is printed.

A second workload, `--workload mlp` (both run by default), is the MLP of LiBai's MNIST
tutorial (784-512-512-10, batch 128, AdamW, clipping 1.0, fp32) on a LiBai-style dataset
(an `Instance` of `DistTensorData` per sample, collated by `Instance.stack`), against a
hand-written loop over the same samples as plain tensors with
`torch.utils.data.default_collate`; it also prints each side's collate time per batch.

    OMP_NUM_THREADS=1 python benchmarks/trainer_overhead.py [--rounds 7 --iters 100 --workload cnn,mlp]
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
from omegaconf import OmegaConf  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, default_collate  # noqa: E402

from libai.config import LazyCall, LazyConfig, get_config, merge_update  # noqa: E402
from libai.data.build import build_image_train_loader  # noqa: E402
from libai.data.structures import DistTensorData, Instance  # noqa: E402
from libai.engine import DefaultTrainer, default_setup  # noqa: E402
from libai.engine.trainer import _clip_groups, frozen_heap  # noqa: E402
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


def instance_tensors(batch) -> tuple:
    """(images, labels) of a batch of the MNIST project's loader (an Instance)."""
    return batch.get("images").tensor, batch.get("labels").tensor


def plain_loop(model, optimizer, scheduler, loader, iters: int, unpack=instance_tensors) -> float:
    """The loop a user writes by hand; returns seconds for `iters` iterations."""
    data = iter(loader)
    clip = _clip_groups(optimizer)
    start = time.perf_counter()
    for _ in range(iters):
        images, labels = unpack(next(data))
        loss = model(images=images, labels=labels)["losses"]
        loss.backward()
        for params, max_norm, norm_type in clip:
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        loss.item()  # the hand loop also reads its loss, as any loop that prints it does
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------
# The MLP workload: LiBai's tutorial MLP on Instance samples vs plain tensors
# --------------------------------------------------------------------------------------


class TutorialMLP(nn.Module):
    """784-512-512-10 with ReLUs; LiBai's contract: a dict with "losses" in training."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        self.loss_func = nn.CrossEntropyLoss()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"losses": self.loss_func(self.net(images), labels)}


class RandomDigits(Dataset):
    """4,000 random 1 x 28 x 28 images and labels; `instances=True` returns LiBai samples
    (`Instance(images=DistTensorData, labels=DistTensorData)`), else `(image, label)`."""

    def __init__(self, instances: bool = True, size: int = 4000) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(size, 1, 28, 28, generator=generator)
        self.labels = torch.randint(0, 10, (size,), generator=generator)
        self.instances = instances

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image, label = self.images[index], self.labels[index]
        if not self.instances:
            return image, label
        return Instance(images=DistTensorData(image), labels=DistTensorData(label, placement_idx=-1))


def build_mlp_trainer(output_dir: str, total_iters: int) -> DefaultTrainer:
    """The tutorial's setup as a LazyConfig: batch 128, AdamW, clipping 1.0, fp32, no workers."""
    cfg = OmegaConf.create()
    cfg.train = get_config("common/train.py").train
    cfg.optim = get_config("common/optim.py").optim
    cfg.graph = get_config("common/models/graph.py").graph
    cfg.model = LazyCall(TutorialMLP)()
    cfg.dataloader = OmegaConf.create()
    cfg.dataloader.train = LazyCall(build_image_train_loader)(dataset=[LazyCall(RandomDigits)()], num_workers=0)
    merge_update(
        cfg.train,
        dict(output_dir=output_dir, train_micro_batch_size=128, train_epoch=0, train_iter=total_iters,
             evaluation=dict(enabled=False), checkpointer=dict(period=total_iters * 10))
    )
    cfg.optim.lr = 1e-3
    cfg.graph.enabled = False
    default_setup(cfg, argparse.Namespace(resume=False, fast_dev_run=False, config_file=""))
    return DefaultTrainer(cfg)


def collate_ms(collate, samples: list, repeats: int = 50) -> float:
    """Milliseconds per batch of `collate(samples)`, best of `repeats`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        collate(samples)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def endless(loader):
    """Batches of `loader`, epoch after epoch."""
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--workload", default="cnn,mlp", help="comma-separated: cnn (MNIST project), mlp (tutorial MLP)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))
    for workload in args.workload.split(","):
        if workload.strip() == "cnn":
            run_workload(args, "cnn", build_trainer, lambda cfg: DefaultTrainer.build_train_loader(cfg)[0], plain_loop)
        elif workload.strip() == "mlp":
            plain_data = RandomDigits(instances=False)
            run_workload(
                args, "mlp", build_mlp_trainer,
                lambda cfg: endless(DataLoader(plain_data, batch_size=128, shuffle=True, drop_last=True)),
                lambda *a: plain_loop(*a, unpack=tuple),
            )
            samples = RandomDigits()
            print(f"collate per batch of 128: Instance.stack {collate_ms(Instance.stack, [samples[i] for i in range(128)]):.3f} ms, "
                  f"default_collate of plain tensors {collate_ms(default_collate, [plain_data[i] for i in range(128)]):.3f} ms")
        else:
            parser.error(f"--workload: unknown {workload!r}; use cnn and/or mlp")


def run_workload(args, name: str, build, build_plain_loader, plain_steps) -> None:
    """Time the trainer against `plain_steps` in alternated rounds; print the ratio."""
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build(output_dir, args.rounds * args.iters + 11)
        # The hand loop gets its own copy of the same starting state.
        model = copy.deepcopy(trainer.model)
        optimizer = DefaultTrainer.build_optimizer(trainer.cfg, model)
        scheduler = DefaultTrainer.build_lr_scheduler(trainer.cfg, optimizer)
        plain_loader = build_plain_loader(trainer.cfg)

        def trainer_loop(first: int, iters: int) -> float:
            """The trainer's own iterations with all hooks, inside the trainer's
            `frozen_heap` as `TrainerBase.train` runs them (entered and left outside the
            timed span, so the plain rounds run with Python's garbage collector as a
            hand-written loop has it); returns seconds."""
            with frozen_heap(trainer.freeze_heap):
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
            plain_steps(model, optimizer, scheduler, plain_loader, 10)
            trainer_loop(0, 10)
            next_iter = 10
            for round_idx in range(args.rounds):
                order = ("trainer", "plain") if round_idx % 2 == 0 else ("plain", "trainer")
                for which in order:
                    if which == "plain":
                        plain_rates.append(args.iters / plain_steps(model, optimizer, scheduler, plain_loader, args.iters))
                    else:
                        trainer_rates.append(args.iters / trainer_loop(next_iter, args.iters))
                        next_iter += args.iters
            trainer.after_train()

    trainer_its = statistics.median(trainer_rates)
    plain_its = statistics.median(plain_rates)
    required = 0.98 if name == "cnn" else 0.95
    ratio = trainer_its / plain_its
    print(f"[{name}] batch {trainer.cfg.train.train_micro_batch_size}, {args.rounds} rounds x {args.iters} iterations, "
          f"torch threads {torch.get_num_threads()}")
    print(f"[{name}] plain loop     : {plain_its:8.1f} it/s (median)")
    print(f"[{name}] DefaultTrainer : {trainer_its:8.1f} it/s (median)")
    print(f"[{name}] ratio trainer/plain = {ratio:.3f} {'PASS' if ratio >= required else 'FAIL'} (required >= {required})")
    rounds = " ".join(f"{t / p:.3f}" for t, p in zip(trainer_rates, plain_rates))
    print(f"[{name}] per-round ratios: {rounds}")


if __name__ == "__main__":
    main()
