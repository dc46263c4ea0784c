"""Hooks on a fake trainer that calls them the way the real one does."""
import json
import logging
import math
import os
import statistics

import pytest
import torch

from libai.engine import hooks
from libai.engine.trainer import TrainerBase
from libai.engine.hooks import (
    BestCheckpointer,
    EarlyStopping,
    TopKCheckpointer,
    CallbackHook,
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    flatten_results_dict,
)
from libai.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    EventWriter,
    JSONWriter,
    TensorboardXWriter,
)


class FakeCheckpointer:
    """Records save() calls and writes `save_dir/name/extra.json` + `last_checkpoint`."""

    def __init__(self, save_dir, write=True):
        self.save_dir = str(save_dir)
        self.saved = []
        self._write = write

    def save(self, name, **extra):
        self.saved.append((name, extra))
        if not self._write:
            return
        path = os.path.join(self.save_dir, name)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "extra.json"), "w") as f:
            json.dump(extra, f)
        with open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(name)


class FakeTrainer:
    """The trainer's hook protocol: before_step (all), run_step, after_step (all),
    storage.step(). `bump_iter` mimics trainers that set iter = max_iter after the loop."""

    def __init__(self, hook_list, max_iter, start_iter=0, save_dir=None, gbs=4, bump_iter=True):
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.global_batch_size = gbs
        self.storage = EventStorage(start_iter)
        self.model = torch.nn.Linear(2, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: 0.5**i)
        self.checkpointer = FakeCheckpointer(save_dir) if save_dir else None
        self.cfg = None
        self._consumed = start_iter * gbs
        self._bump_iter = bump_iter
        self.hooks = list(hook_list)
        for h in self.hooks:
            h.trainer = self

    @property
    def consumed_train_samples(self):
        return self._consumed

    def run_step(self):
        loss = 1.0 / (self.iter + 1)
        self.optimizer.step()  # no grads: a no-op that keeps the scheduler warning away
        self._consumed += self.global_batch_size
        self.storage.put_scalars(total_loss=loss, loss_cls=loss, data_time=0.0)

    def train(self):
        with self.storage:
            for h in self.hooks:
                h.before_train()
            try:
                for self.iter in range(self.start_iter, self.max_iter):
                    for h in self.hooks:
                        h.before_step()
                    self.run_step()
                    for h in self.hooks:
                        h.after_step()
                    self.storage.step()
                if self._bump_iter:
                    self.iter += 1
            finally:
                for h in self.hooks:
                    h.after_train()


def _dirs(path):
    return sorted(os.listdir(path))


# ---------------------------------------------------------------------------------------
# PeriodicCheckpointer
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bump_iter", [True, False])
def test_periodic_checkpointer_period_final_and_max_to_keep(tmp_path, bump_iter):
    ckpt = FakeCheckpointer(tmp_path)
    hook = PeriodicCheckpointer(ckpt, period=3, max_to_keep=2)
    FakeTrainer([hook], max_iter=10, gbs=4, bump_iter=bump_iter).train()
    assert ckpt.saved == [
        ("model_0000002", {"iteration": 2, "consumed_train_samples": 12}),
        ("model_0000005", {"iteration": 5, "consumed_train_samples": 24}),
        ("model_0000008", {"iteration": 8, "consumed_train_samples": 36}),
        ("model_final", {"iteration": 9, "consumed_train_samples": 40}),
    ]
    # The oldest periodic dir was deleted; nothing half-deleted or hidden is left.
    assert _dirs(tmp_path) == ["last_checkpoint", "model_0000005", "model_0000008", "model_final"]


def test_periodic_checkpointer_last_iter_on_period(tmp_path):
    ckpt = FakeCheckpointer(tmp_path)
    FakeTrainer([PeriodicCheckpointer(ckpt, period=3)], max_iter=6).train()
    assert [name for name, _ in ckpt.saved] == ["model_0000002", "model_0000005", "model_final"]


def test_periodic_checkpointer_max_to_keep_counts_previous_run(tmp_path):
    for name in ["model_0000000", "model_0000001", "model_0000003", "model_best", "other_0000001"]:
        os.makedirs(tmp_path / name)
    ckpt = FakeCheckpointer(tmp_path)
    hook = PeriodicCheckpointer(ckpt, period=2, max_to_keep=2, max_iter=8)
    FakeTrainer([hook], max_iter=8, start_iter=4).train()
    assert [name for name, _ in ckpt.saved] == ["model_0000005", "model_0000007", "model_final"]
    assert ckpt.saved[0][1] == {"iteration": 5, "consumed_train_samples": 24}
    assert _dirs(tmp_path) == [
        "last_checkpoint", "model_0000005", "model_0000007", "model_best", "model_final",
        "other_0000001",
    ]


def test_periodic_checkpointer_with_saving_disabled():
    ckpt = FakeCheckpointer("", write=False)
    FakeTrainer([PeriodicCheckpointer(ckpt, period=1, max_to_keep=1)], max_iter=3).train()
    assert [name for name, _ in ckpt.saved] == [
        "model_0000000", "model_0000001", "model_0000002", "model_final"
    ]


def test_periodic_checkpointer_accepts_integral_float_period(tmp_path):
    assert PeriodicCheckpointer(FakeCheckpointer(tmp_path), period=1e3).period == 1000


@pytest.mark.parametrize("period", [0, -1, 2.5, None])
def test_periodic_checkpointer_rejects_bad_period(tmp_path, period):
    with pytest.raises(ValueError, match="checkpointer.period"):
        PeriodicCheckpointer(FakeCheckpointer(tmp_path), period=period)


# ---------------------------------------------------------------------------------------
# EvalHook
# ---------------------------------------------------------------------------------------


class Evaluator:
    """An eval function returning `values[k]` on its k-th call, nested as LiBai allows."""

    def __init__(self, values, nested=False):
        self.values = list(values)
        self.calls = []
        self.trainer = None
        self.nested = nested

    def __call__(self):
        value = self.values[len(self.calls)]
        self.calls.append(self.trainer.iter)
        if self.nested:
            return {"mnist": {"Acc@1": value, "Acc@5": 100.0}}
        return {"Acc@1": value, "Acc@5": 100.0}


@pytest.mark.parametrize("bump_iter", [True, False])
def test_eval_hook_period_and_end(bump_iter):
    ev = Evaluator([10.0, 20.0, 30.0], nested=True)
    trainer = FakeTrainer([EvalHook(4, ev)], max_iter=10, bump_iter=bump_iter)
    ev.trainer = trainer
    trainer.train()
    assert ev.calls == [3, 7, 9]
    storage = trainer.storage
    assert storage.history("mnist/Acc@1").values() == [(10.0, 3), (20.0, 7), (30.0, 9)]
    assert storage.latest()["mnist/Acc@5"] == (100.0, 9)
    assert storage.smoothing_hints()["mnist/Acc@1"] is False


def test_eval_hook_period_zero_means_only_at_end():
    ev = Evaluator([1.0])
    trainer = FakeTrainer([EvalHook(0, ev)], max_iter=5)
    ev.trainer = trainer
    trainer.train()
    assert ev.calls == [4]


def test_eval_hook_runs_once_when_resumed_at_the_end():
    ev = Evaluator([1.0])
    trainer = FakeTrainer([EvalHook(2, ev)], max_iter=6, start_iter=6)
    ev.trainer = trainer
    trainer.train()
    assert len(ev.calls) == 1


def test_eval_hook_skips_after_failure():
    ev = Evaluator([1.0, 2.0])
    def fail_at_2(trainer):
        if trainer.iter == 2:
            raise RuntimeError("boom")

    boom = CallbackHook(after_step=fail_at_2)
    trainer = FakeTrainer([EvalHook(0, ev), boom], max_iter=10)
    ev.trainer = trainer
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert ev.calls == []


def test_eval_hook_rejects_non_numbers():
    trainer = FakeTrainer([EvalHook(1, lambda: {"Acc@1": "high"})], max_iter=2)
    with pytest.raises(ValueError, match="Acc@1"):
        trainer.train()
    trainer = FakeTrainer([EvalHook(1, lambda: [1.0])], max_iter=2)
    with pytest.raises(TypeError, match="dict"):
        trainer.train()


def test_flatten_results_dict():
    assert flatten_results_dict({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {
        "a/b": 1, "a/c/d": 2, "e": 3
    }


# ---------------------------------------------------------------------------------------
# BestCheckpointer
# ---------------------------------------------------------------------------------------


def _train_with_best(tmp_path, values, mode, period, max_iter, metric="Acc@1", **kw):
    ckpt = FakeCheckpointer(tmp_path)
    ev = Evaluator(values, nested=kw.pop("nested", False))
    best = BestCheckpointer(period, ckpt, metric, mode=mode)
    trainer = FakeTrainer([EvalHook(period, ev), best], max_iter=max_iter, **kw)
    ev.trainer = trainer
    trainer.train()
    return ckpt, best


@pytest.mark.parametrize("bump_iter", [True, False])
def test_best_checkpointer_mode_max(tmp_path, bump_iter):
    ckpt, best = _train_with_best(
        tmp_path, [50.0, 70.0, 60.0, 80.0], "max", period=2, max_iter=8, bump_iter=bump_iter
    )
    # Saved at the first eval, then only on improvement (70 > 50, 80 > 70; not 60).
    assert ckpt.saved == [
        ("model_best", {"iteration": 1, "consumed_train_samples": 8}),
        ("model_best", {"iteration": 3, "consumed_train_samples": 16}),
        ("model_best", {"iteration": 7, "consumed_train_samples": 32}),
    ]
    assert (best.best_metric, best.best_iter) == (80.0, 7)
    with open(tmp_path / "model_best" / "extra.json") as f:
        assert json.load(f)["iteration"] == 7


def test_best_checkpointer_mode_min_ignores_nan(tmp_path):
    ckpt, best = _train_with_best(
        tmp_path, [5.0, 3.0, 4.0, math.nan, 2.0], "min", period=2, max_iter=10, nested=True
    )
    assert [extra["iteration"] for _, extra in ckpt.saved] == [1, 3, 9]
    assert (best.best_metric, best.best_iter) == (2.0, 9)
    assert best.state_dict() == {"best_metric": 2.0, "best_iter": 9}


def test_best_checkpointer_first_value_nan_is_not_saved(tmp_path):
    ckpt, _ = _train_with_best(tmp_path, [math.nan, 1.0], "max", period=2, max_iter=4)
    assert [extra["iteration"] for _, extra in ckpt.saved] == [3]


def test_best_checkpointer_resumed_at_end_saves_once(tmp_path):
    ckpt, _ = _train_with_best(tmp_path, [1.0], "max", period=2, max_iter=4, start_iter=4)
    assert [name for name, _ in ckpt.saved] == ["model_best"]


def test_best_checkpointer_load_state_blocks_worse(tmp_path):
    ckpt = FakeCheckpointer(tmp_path)
    ev = Evaluator([60.0, 95.0])
    best = BestCheckpointer(2, ckpt, "Acc@1", mode="max")
    best.load_state_dict({"best_metric": 90.0, "best_iter": 99})
    trainer = FakeTrainer([EvalHook(2, ev), best], max_iter=4)
    ev.trainer = trainer
    trainer.train()
    assert [extra["iteration"] for _, extra in ckpt.saved] == [3]


def test_best_checkpointer_missing_metric_warns(tmp_path, caplog):
    logging.getLogger("libai").propagate = True
    with caplog.at_level(logging.WARNING, logger=hooks.__name__):
        ckpt, _ = _train_with_best(tmp_path, [1.0, 2.0], "max", period=2, max_iter=4,
                                   metric="Acc@3")
    assert ckpt.saved == []
    warnings = [r.getMessage() for r in caplog.records if "Acc@3" in r.getMessage()]
    assert len(warnings) == 1 and "Acc@1" in warnings[0]


def test_best_checkpointer_rejects_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="'max' or 'min'"):
        BestCheckpointer(2, FakeCheckpointer(tmp_path), "Acc@1", mode="maximum")


# ---------------------------------------------------------------------------------------
# LRScheduler, IterationTimer, PeriodicWriter, CallbackHook
# ---------------------------------------------------------------------------------------


def test_lr_scheduler_hook_defaults_to_trainer():
    trainer = FakeTrainer([LRScheduler()], max_iter=5)
    trainer.train()
    assert trainer.storage.history("lr").values() == [(0.5**i, i) for i in range(5)]
    assert trainer.storage.smoothing_hints()["lr"] is False
    assert trainer.lr_scheduler.last_epoch == 5


def test_lr_scheduler_hook_logs_largest_group():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1, bias=False))
    opt = torch.optim.SGD(
        [{"params": [model[1].weight], "lr": 9.0},
         {"params": [model[0].weight, model[0].bias], "lr": 2.0}], lr=1.0
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    step_opt = CallbackHook(before_step=lambda t: opt.step())
    trainer = FakeTrainer([step_opt, LRScheduler(opt, sched)], max_iter=4)
    trainer.train()
    lrs = [v for v, _ in trainer.storage.history("lr").values()]
    assert lrs == pytest.approx([2.0, 2.0, 0.2, 0.2])
    assert LRScheduler.get_best_param_group_id(opt) == 1


def test_iteration_timer_puts_time_and_logs(caplog):
    logging.getLogger("libai").propagate = True
    with caplog.at_level(logging.INFO, logger=hooks.__name__):
        trainer = FakeTrainer([IterationTimer(warmup_iter=3)], max_iter=10)
        trainer.train()
    times = trainer.storage.history("time").values()
    assert [itr for _, itr in times] == list(range(2, 10))
    assert all(0 <= t < 1 for t, _ in times)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Overall training speed: 8 iterations" in text
    assert "Total training time" in text


class RecordingWriter(EventWriter):
    def __init__(self):
        self.writes = []
        self.closed = 0

    def write(self):
        from libai.utils.events import get_event_storage

        self.writes.append(get_event_storage().iter)

    def close(self):
        self.closed += 1


def test_periodic_writer_periods():
    writer = RecordingWriter()
    FakeTrainer([PeriodicWriter([writer], period=4)], max_iter=10, bump_iter=False).train()
    # Iterations 3, 7, the last (9), then once more in after_train (storage stepped to 10).
    assert writer.writes == [3, 7, 9, 10]
    assert writer.closed == 1


def test_periodic_writer_rejects_bad_input():
    with pytest.raises(TypeError, match="EventWriter"):
        PeriodicWriter([object()])
    with pytest.raises(ValueError, match="log_period"):
        PeriodicWriter([RecordingWriter()], period=0)


def test_callback_hook():
    calls = []
    hook = CallbackHook(
        before_train=lambda t: calls.append("bt"),
        before_step=lambda t: calls.append(f"bs{t.iter}"),
        after_step=lambda t: calls.append(f"as{t.iter}"),
        after_train=lambda t: calls.append("at"),
    )
    FakeTrainer([hook], max_iter=2).train()
    assert calls == ["bt", "bs0", "as0", "bs1", "as1", "at"]


# ---------------------------------------------------------------------------------------
# The default hook list with real writers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bump_iter", [True, False])
def test_default_hooks_with_real_writers(tmp_path, caplog, bump_iter):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("libai").propagate = True
    ckpt = FakeCheckpointer(tmp_path)
    ev = Evaluator([50.0, 40.0, 90.0])
    writers = [
        CommonMetricPrinter(batch_size=4, max_iter=12),
        JSONWriter(str(tmp_path / "metrics.json")),
        TensorboardXWriter(str(tmp_path)),
    ]
    hook_list = [
        IterationTimer(),
        LRScheduler(),
        PeriodicCheckpointer(ckpt, period=6, max_to_keep=1),
        EvalHook(5, ev),
        BestCheckpointer(5, ckpt, "Acc@1", mode="max"),
        PeriodicWriter(writers, period=4),
    ]
    trainer = FakeTrainer(hook_list, max_iter=12, bump_iter=bump_iter)
    ev.trainer = trainer
    with caplog.at_level(logging.INFO):
        trainer.train()

    assert ev.calls == [4, 9, 11]
    assert [name for name, _ in ckpt.saved] == [
        "model_best", "model_0000005", "model_0000011", "model_final", "model_best"
    ]
    assert [d for d in _dirs(tmp_path) if not d.startswith("events.out")] == [
        "last_checkpoint", "metrics.json", "model_0000011", "model_best", "model_final"
    ]

    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    # Writers keep LiBai's rule of writing each scalar's latest value: the eval at 9 was
    # superseded by the final eval (11) before the next write.
    assert [d["iteration"] for d in lines] == [3, 4, 7, 11]
    assert lines[1] == {"iteration": 4, "Acc@1": 50.0, "Acc@5": 100.0}
    assert lines[3]["Acc@1"] == 90.0 and lines[3]["lr"] == 0.5**11
    # Smoothed over the default window of 20: the median of all 12 losses.
    assert lines[3]["total_loss"] == statistics.median(1.0 / (i + 1) for i in range(12))

    console = [r.getMessage() for r in caplog.records if "consumed_samples" in r.getMessage()]
    assert [line.split("iteration: ")[1].split()[0] for line in console] == [
        "3/12", "7/12", "11/12"
    ]
    assert "consumed_samples: 48" in console[-1]

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("Acc@1")] == [(4, 50.0), (11, 90.0)]


# ---------------------------------------------------------------------------------------
# Two processes: BestCheckpointer decides on rank 0; deletion and logs per rank
# ---------------------------------------------------------------------------------------


def _two_rank_worker(tmp_dir):
    from libai.utils import distributed as dist
    from libai.utils.logger import setup_logger

    dist.setup_dist_util({})
    rank = dist.get_rank()
    log = setup_logger(tmp_dir, distributed_rank=rank, name="libai")
    log.info("hello from rank %d", rank)
    # Rank 1's evaluations disagree with rank 0's: rank 0's decision must win everywhere.
    values = [1.0, 3.0, 2.0, 4.0] if rank == 0 else [9.0, 1.0, 1.0, 1.0]
    ckpt = FakeCheckpointer(tmp_dir, write=(rank == 0))
    ev = Evaluator(values)
    hook_list = [
        PeriodicCheckpointer(ckpt, period=2, max_to_keep=1),
        EvalHook(2, ev),
        BestCheckpointer(2, ckpt, "Acc@1", mode="max"),
    ]
    trainer = FakeTrainer(hook_list, max_iter=8)
    ev.trainer = trainer
    trainer.train()
    dist.synchronize()
    return [(name, extra["iteration"]) for name, extra in ckpt.saved], sorted(os.listdir(tmp_dir))


def test_two_ranks_best_checkpoint_and_logs(tmp_path):
    from tests.helpers.dist import run_on_ranks

    results = run_on_ranks(_two_rank_worker, 2, str(tmp_path))
    saves = [name_iter for name_iter in results[0][0] if name_iter[0] == "model_best"]
    assert saves == [("model_best", 1), ("model_best", 3), ("model_best", 7)]
    assert results[0][0] == results[1][0]
    files = results[1][1]
    assert "log.txt" in files and "log.txt.rank1" in files
    assert [f for f in files if f.startswith("model_0")] == ["model_0000007"]
    assert "hello from rank 1" in (tmp_path / "log.txt.rank1").read_text()
    assert "hello from rank 1" not in (tmp_path / "log.txt").read_text()


# ---------------------------------------------------------------------------------------
# The real TrainerBase drives the hooks the same way
# ---------------------------------------------------------------------------------------


def test_hooks_under_real_trainer_base(tmp_path):
    from libai.engine.trainer import TrainerBase

    class Trainer(TrainerBase):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Linear(2, 1)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
            self.lr_scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 3)
            self.global_batch_size = 2

        @property
        def consumed_train_samples(self):
            return (self.iter + 1) * self.global_batch_size

        def run_step(self):
            self.optimizer.step()
            self.storage.put_scalars(total_loss=1.0 / (self.iter + 1), data_time=0.0)

    ckpt = FakeCheckpointer(tmp_path)
    ev = Evaluator([1.0, 2.0])
    trainer = Trainer()
    ev.trainer = trainer
    trainer.register_hooks([
        IterationTimer(),
        LRScheduler(),
        PeriodicCheckpointer(ckpt, period=4, max_to_keep=1, max_iter=8),
        EvalHook(4, ev),
        BestCheckpointer(4, ckpt, "Acc@1"),
        PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json"))], period=4),
    ])
    trainer.train(0, 8)
    assert ev.calls == [3, 7]
    assert ckpt.saved == [
        ("model_0000003", {"iteration": 3, "consumed_train_samples": 8}),
        ("model_best", {"iteration": 3, "consumed_train_samples": 8}),
        ("model_0000007", {"iteration": 7, "consumed_train_samples": 16}),
        ("model_final", {"iteration": 7, "consumed_train_samples": 16}),
        ("model_best", {"iteration": 7, "consumed_train_samples": 16}),
    ]
    lines = [json.loads(x) for x in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [d["iteration"] for d in lines] == [3, 7]
    # StepLR(step_size=3): lr 0.01 on iterations 6-8.
    assert lines[1]["Acc@1"] == 2.0 and lines[1]["lr"] == pytest.approx(0.01)


# ---------------------------------------------------------------------------------------
# EarlyStopping
# ---------------------------------------------------------------------------------------


class _CountingTrainer(TrainerBase):
    """The real loop (`TrainerBase.train`) around a step that logs a constant loss."""

    max_iter = 0
    global_batch_size = 4

    @property
    def consumed_train_samples(self):
        return (self.iter + 1) * self.global_batch_size

    def run_step(self):
        self.storage.put_scalar("total_loss", 1.0)


def _train_with_early_stopping(tmp_path, values, patience, min_delta=0.0, state=None, start_iter=0, max_iter=40):
    ckpt = FakeCheckpointer(tmp_path)
    ev = Evaluator(values)
    stopping = EarlyStopping(2, ckpt, "Acc@1", mode="max", patience=patience, min_delta=min_delta)
    if state is not None:
        stopping.load_state_dict(state)
    trainer = _CountingTrainer()
    trainer.register_hooks([EvalHook(2, ev), stopping])
    ev.trainer = trainer
    trainer.train(start_iter, max_iter)
    return trainer, ckpt, stopping, ev


def test_early_stopping_ends_at_the_evaluation_that_exhausts_the_patience(tmp_path, caplog):
    # Evaluations at iterations 1, 3, 5, ...: 50 (best), 60 (best), 60.05, 59, 55 -> the
    # third evaluation without an improvement > 0.1 is the one at iteration 9.
    with caplog.at_level(logging.INFO, logger="libai"):
        trainer, ckpt, stopping, ev = _train_with_early_stopping(
            tmp_path, [50.0, 60.0, 60.05, 59.0, 55.0, 99.0], patience=3, min_delta=0.1
        )
    assert ev.calls == [1, 3, 5, 7, 9]
    assert ckpt.saved == [("model_final", {"iteration": 9, "consumed_train_samples": 40})]
    assert trainer.iter == 10 and trainer.stop_reason.startswith("early stopping: Acc@1 has not improved")
    assert "Training stopped after iteration 9: early stopping" in caplog.text
    assert stopping.state_dict() == {"best_metric": 60.0, "evals_without_improvement": 3, "judged_iter": 9}


def test_early_stopping_counter_survives_a_resume(tmp_path):
    """Resumed after the evaluation at iteration 5 (one without improvement so far)."""
    state = {"best_metric": 60.0, "evals_without_improvement": 1, "judged_iter": 5}
    trainer, ckpt, _, ev = _train_with_early_stopping(tmp_path, [59.0, 58.0, 99.0], patience=3, state=state, start_iter=6)
    assert ev.calls == [7, 9]
    assert [extra["iteration"] for _, extra in ckpt.saved] == [9]


def test_early_stopping_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="eval_mode"):
        EarlyStopping(2, FakeCheckpointer(tmp_path), "Acc@1", mode="best")
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(2, FakeCheckpointer(tmp_path), "Acc@1", min_delta=-1)


# ---------------------------------------------------------------------------------------
# TopKCheckpointer
# ---------------------------------------------------------------------------------------


def _train_with_top_k(tmp_path, values, k, state=None, start_iter=0, max_iter=12):
    from libai.utils.checkpoint import Checkpointer

    ckpt = Checkpointer(torch.nn.Linear(2, 1), str(tmp_path))
    ev = Evaluator(values)
    top = TopKCheckpointer(2, ckpt, "Acc@1", k=k, mode="max")
    if state is not None:
        top.load_state_dict(state)
    trainer = _CountingTrainer()
    trainer.register_hooks([EvalHook(2, ev), top])
    ev.trainer = trainer
    trainer.train(start_iter, max_iter)
    return top


def _top_dirs(path):
    return sorted(d for d in os.listdir(path) if d.startswith("model_top_"))


def test_top_k_keeps_exactly_the_k_best_across_a_resume(tmp_path):
    # Evaluations at 1, 3, 5, 7, 9, 11: 50, 70, 60 (pushes out 50), 80 (pushes out 60),
    # 65 (not saved), 90 (pushes out 70).
    top = _train_with_top_k(tmp_path, [50.0, 70.0, 60.0, 80.0, 65.0, 90.0], k=2)
    assert _top_dirs(tmp_path) == ["model_top_0000007", "model_top_0000011"]
    with open(tmp_path / "top_k.json") as f:
        assert json.load(f) == [
            {"iteration": 11, "value": 90.0, "dir": "model_top_0000011", "metric": "Acc@1"},
            {"iteration": 7, "value": 80.0, "dir": "model_top_0000007", "metric": "Acc@1"},
        ]
    # Resumed at 12: 85 pushes out 80, 75 is not saved.
    resumed = _train_with_top_k(tmp_path, [85.0, 75.0], k=2, state=top.state_dict(), start_iter=12, max_iter=16)
    assert _top_dirs(tmp_path) == ["model_top_0000011", "model_top_0000013"]
    assert [(e["iteration"], e["value"]) for e in resumed.best] == [(11, 90.0), (13, 85.0)]
    with open(tmp_path / "top_k.json") as f:
        assert [e["dir"] for e in json.load(f)] == ["model_top_0000011", "model_top_0000013"]
