"""Unit tests of the engine's pieces: batch sizes, auto-scaling, the step, graph fallback."""
import gc
import json
import logging
import types

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from libai.engine.default import BatchSizeError, auto_scale_hyperparams, resolve_batch_sizes
from libai.engine.trainer import EagerTrainer, _clip_groups
from libai.models.utils.graph_base import GraphBase
from libai.utils import distributed as dist
from libai.utils.events import EventStorage


@pytest.fixture(scope="module", autouse=True)
def one_process_group():
    dist.setup_dist_util({}, device="cpu")


# ---- batch sizes ---------------------------------------------------------------------


def _train(micro, global_, accum):
    return OmegaConf.create(
        dict(train_micro_batch_size=micro, global_batch_size=global_, num_accumulation_steps=accum)
    )


@pytest.mark.parametrize(
    "micro, global_, accum, dp, expected",
    [
        (32, None, None, 4, (32, 128, 1)),
        (32, None, 2, 4, (32, 256, 2)),
        (16, 64, None, 2, (16, 64, 2)),
        (None, 64, 4, 2, (8, 64, 4)),
        (8, 64, 4, 2, (8, 64, 4)),
    ],
)
def test_any_two_batch_sizes_determine_the_third(micro, global_, accum, dp, expected):
    train = _train(micro, global_, accum)
    resolve_batch_sizes(train, dp)
    assert (train.train_micro_batch_size, train.global_batch_size, train.num_accumulation_steps) == expected


@pytest.mark.parametrize(
    "micro, global_, accum, dp, message",
    [
        (16, 60, None, 2, "not a multiple of train_micro_batch_size=16 x data_parallel_size=2"),
        (8, 64, 2, 2, "!= train_micro_batch_size=8 x data_parallel_size=2 x num_accumulation_steps=2"),
        (None, 60, 4, 2, "not divisible"),
        (None, None, 4, 2, "train_micro_batch_size is None"),
    ],
)
def test_inconsistent_batch_sizes_are_clear_errors(micro, global_, accum, dp, message):
    with pytest.raises(BatchSizeError, match=message.replace("(", r"\(")):
        resolve_batch_sizes(_train(micro, global_, accum), dp)


def test_auto_scale_turns_epochs_and_ratios_into_iterations():
    cfg = OmegaConf.create(
        dict(
            train=dict(
                global_batch_size=64,
                train_epoch=3,
                train_iter=10,
                warmup_ratio=0.1,
                evaluation=dict(eval_after_n_epoch=1, eval_period=5000),
                checkpointer=dict(save_model_after_n_epoch=2, period=5000),
            )
        )
    )
    loader = types.SimpleNamespace(dataset=list(range(1000)))
    auto_scale_hyperparams(cfg, loader)
    assert cfg.train.train_iter == 47  # ceil(1000 * 3 / 64)
    assert cfg.train.warmup_iter == 5  # ceil(47 * 0.1)
    assert cfg.train.samples == 47 * 64
    assert cfg.train.evaluation.eval_period == 16  # ceil(1000 / 64) iterations per epoch
    assert cfg.train.checkpointer.period == 32
    cfg.train.train_epoch, cfg.train.train_iter = 1, 100
    auto_scale_hyperparams(cfg, loader)
    assert cfg.train.train_iter == 100  # the larger of the two wins


# ---- the step ------------------------------------------------------------------------


class _Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.loss_func = nn.MSELoss()

    def forward(self, x, y):
        return {"loss_mse": self.loss_func(self.fc(x), y), "aux_loss": self.fc.weight.abs().mean()}


class _Field:
    def __init__(self, tensor):
        self.tensor = tensor


def _batches(xs, ys):
    return [{"x": _Field(x), "y": _Field(y)} for x, y in zip(xs, ys)]


def _get_batch(data, device=None, mixup=None):
    return {k: v.tensor for k, v in data.items()}


def _one_step(model, batches, accum, max_norm, exact=False):
    optimizer = torch.optim.SGD(
        [dict(params=list(model.parameters()), clip_grad_max_norm=max_norm, clip_grad_norm_type=2.0)], lr=0.1
    )
    reducer = dist.make_gradient_reducer(model, accum, exact=exact)
    trainer = EagerTrainer(model, batches, optimizer, grad_acc_steps=accum, grad_reducer=reducer, batch_fn=_get_batch)
    grads = {}
    real_step = optimizer.step

    def record_then_step():
        grads.update({n: p.grad.clone() for n, p in model.named_parameters()})
        real_step()

    optimizer.step = record_then_step
    with EventStorage(0) as storage:
        trainer.run_step()
        trainer.read_metrics()
    return grads, storage


def test_accumulated_step_equals_one_big_batch_with_clipping():
    torch.manual_seed(0)
    xs, ys = torch.randn(3, 5, 4), torch.randn(3, 5, 3)
    model = _Regressor()
    reference = _Regressor()
    reference.load_state_dict(model.state_dict())

    grads, storage = _one_step(model, _batches(xs, ys), accum=3, max_norm=0.5)

    # torch.nn reference: mean loss over the 3 micro-batches, then clip_grad_norm_.
    losses = [reference(x, y) for x, y in zip(xs, ys)]
    total = sum(l["loss_mse"] + l["aux_loss"] for l in losses) / 3
    total.backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-6, atol=1e-7)
    expected_loss = sum(l["loss_mse"].item() for l in losses) / 3
    assert storage.history("loss_mse").latest() == pytest.approx(expected_loss, rel=1e-6)
    assert storage.history("total_loss").latest() == pytest.approx(total.item(), rel=1e-6)


def test_micro_batch_order_does_not_change_the_step():
    """The exact reducer's float64 sum makes the update independent of how the batch is
    split and ordered (train.dist.exact_reduction)."""
    torch.manual_seed(1)
    xs, ys = torch.randn(4, 8, 4) * 100, torch.randn(4, 8, 3)
    model = _Regressor()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    forward_grads, _ = _one_step(model, _batches(xs, ys), accum=4, max_norm=None, exact=True)
    model.load_state_dict(state)
    order = [2, 0, 3, 1]
    shuffled_grads, _ = _one_step(model, _batches(xs[order], ys[order]), accum=4, max_norm=None, exact=True)
    for name in forward_grads:
        assert torch.equal(forward_grads[name], shuffled_grads[name]), name


def test_clip_groups_share_one_norm_per_setting():
    a, b, c = (nn.Parameter(torch.ones(2)) for _ in range(3))
    optimizer = torch.optim.SGD(
        [
            dict(params=[a], clip_grad_max_norm=1.0, clip_grad_norm_type=2.0),
            dict(params=[b], clip_grad_max_norm=1.0, clip_grad_norm_type=2.0, weight_decay=0.1),
            dict(params=[c], clip_grad_max_norm=None),
        ],
        lr=0.1,
    )
    assert _clip_groups(optimizer) == [([a, b], 1.0, 2.0)]


# ---- graph mode ----------------------------------------------------------------------


def _failing_backend(graph_module, example_inputs):
    raise RuntimeError("no compiler on this machine")


def test_graph_mode_falls_back_to_eager_with_one_warning(caplog):
    torch.manual_seed(0)
    model = _Regressor()
    graph = GraphBase(model, is_train=True, compile_kwargs=dict(backend=_failing_backend))
    x, y = torch.randn(5, 4), torch.randn(5, 3)
    with caplog.at_level(logging.WARNING, logger="libai.models.utils.graph_base"):
        out = graph(x=x, y=y)
        graph(x=x, y=y)
    assert torch.equal(out["loss_mse"], model(x, y)["loss_mse"])
    warnings = [r for r in caplog.records if "running eagerly" in r.getMessage()]
    assert len(warnings) == 1
    # The compiled wrapper is not a second copy of the parameters.
    assert [n for n, _ in graph.named_parameters()] == ["model.fc.weight", "model.fc.bias"]


def _found_inf_worker() -> list:
    import torch.distributed as torch_dist

    from libai.engine.trainer import sync_found_inf

    torch_dist.init_process_group("gloo")
    rank = torch_dist.get_rank()
    param = nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    # Only rank 1 overflows, as one tensor-parallel shard can.
    scaler.scale(param.sum() * (float("inf") if rank == 1 else 1.0)).backward()
    scaler.unscale_(optimizer)
    sync_found_inf(scaler, optimizer)
    scaler.step(optimizer)
    scaler.update()
    return [param.detach().tolist(), scaler.get_scale()]


def test_an_overflow_on_one_rank_skips_the_step_on_every_rank():
    from tests.helpers.dist import run_on_ranks

    results = run_on_ranks(_found_inf_worker, 2)
    # Without the sync rank 0 would step to 0.9 while rank 1 skips.
    assert results == [[[1.0, 1.0, 1.0], 4.0]] * 2


def test_a_word_embedding_smaller_than_the_vocabulary_is_a_clear_error():
    from libai.engine.default import VocabSizeError, check_vocab_size
    from tests.helpers.tiny_gpt import TinyGPT

    dist.setup_dist_util(OmegaConf.create(dict(data_parallel_size=1, tensor_parallel_size=1, pipeline_parallel_size=1)), "cpu")
    model = TinyGPT(vocab_size=64)
    check_vocab_size(model, list(range(64)))  # anything with len() works as a tokenizer here
    with pytest.raises(VocabSizeError, match="word_embeddings has 64 rows but the tokenizer has 65 tokens"):
        check_vocab_size(model, list(range(65)))


# ---- a trainer that stands alone, and its state ----------------------------------------


def _instances(xs, ys):
    from libai.data.structures import DistTensorData, Instance

    return [Instance(x=DistTensorData(x), y=DistTensorData(y)) for x, y in zip(xs, ys)]


def test_eager_trainer_trains_by_itself_like_a_hand_written_loop():
    torch.manual_seed(0)
    xs, ys = torch.randn(5, 4, 4), torch.randn(5, 4, 3)
    model, reference = _Regressor(), _Regressor()
    reference.load_state_dict(model.state_dict())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = EagerTrainer(model, _instances(xs, ys), optimizer)
    trainer.train(0, 5)

    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    ref_losses = []
    for x, y in zip(xs, ys):
        losses = reference(x=x, y=y)
        ref_losses.append(sum(v.double() for v in losses.values()).item())
        sum(losses.values()).backward()
        ref_optimizer.step()
        ref_optimizer.zero_grad()
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert trainer.iter == 5
    logged = [value for value, _ in trainer.storage.history("total_loss").values()]
    assert logged == pytest.approx(ref_losses, rel=1e-12)


class _FreezeCountProbe:
    """A hook that records how many objects the garbage collector ignores during a step."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def before_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None:
        self.counts.append(gc.get_freeze_count())

    def after_train(self) -> None: ...

    def reads_metrics(self) -> bool:
        return False


@pytest.mark.parametrize("freeze", [True, False])
def test_training_freezes_the_existing_heap_and_gives_it_back(freeze):
    torch.manual_seed(0)
    model = _Regressor()
    trainer = EagerTrainer(model, _instances(torch.randn(3, 4, 4), torch.randn(3, 4, 3)), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.freeze_heap = freeze
    probe = _FreezeCountProbe()
    trainer.register_hooks([probe])
    assert gc.get_freeze_count() == 0
    trainer.train(0, 3)
    assert all(count > 0 for count in probe.counts) if freeze else probe.counts == [0, 0, 0]
    assert gc.get_freeze_count() == 0, "the heap is unfrozen after training"


def test_a_heap_the_caller_froze_stays_frozen():
    torch.manual_seed(0)
    model = _Regressor()
    trainer = EagerTrainer(model, _instances(torch.randn(2, 4, 4), torch.randn(2, 4, 3)), torch.optim.SGD(model.parameters(), lr=0.1))
    gc.freeze()
    try:
        trainer.train(0, 2)
        assert gc.get_freeze_count() > 0, "training did not unfreeze the caller's frozen heap"
    finally:
        gc.unfreeze()


def _logged_run(tmp_path, log_period: int, monkeypatch) -> tuple[int, int, list]:
    """12 clipped steps of EagerTrainer with a JSON writer every `log_period` iterations:
    (the trainer's metric reads, host reads of any tensor during training, metrics.json)."""
    from libai.engine.hooks import PeriodicWriter
    from libai.utils.events import JSONWriter

    torch.manual_seed(0)
    xs, ys = torch.randn(12, 4, 4), torch.randn(12, 4, 3)
    model = _Regressor()
    optimizer = torch.optim.SGD([dict(params=list(model.parameters()), clip_grad_max_norm=1.0)], lr=0.1)
    trainer = EagerTrainer(model, _instances(xs, ys), optimizer)
    path = tmp_path / f"metrics_{log_period}.json"
    trainer.register_hooks([PeriodicWriter([JSONWriter(str(path))], period=log_period)])
    host_reads = []
    for method in ("item", "tolist", "__float__", "__bool__"):
        real = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method, lambda self, *a, _real=real, _m=method: host_reads.append(_m) or _real(self, *a))
    trainer.train(0, 12)
    monkeypatch.undo()
    return trainer.metric_reads, len(host_reads), [json.loads(line) for line in open(path)]


def test_losses_are_read_to_the_host_on_logged_iterations_only(tmp_path, monkeypatch):
    reads, host_reads, lines = _logged_run(tmp_path, 5, monkeypatch)
    assert (reads, host_reads) == (3, 3), "iterations 4, 9 and 11 (the last): one read each, nothing else"
    every_reads, _, every_lines = _logged_run(tmp_path, 1, monkeypatch)
    assert every_reads == 12
    assert [line["iteration"] for line in lines] == [4, 9, 11]
    by_iteration = {line["iteration"]: line for line in every_lines}
    for line in lines:
        # The same losses (and medians over the same window) as when every step is read.
        expected = by_iteration[line["iteration"]]
        assert {k: v for k, v in line.items() if k != "data_time"} == {k: v for k, v in expected.items() if k != "data_time"}
        assert {"total_loss", "loss_mse", "aux_loss", "data_time"} <= line.keys()


def test_the_batch_fn_given_at_construction_makes_the_model_inputs():
    model = _Regressor()
    seen = []

    def batch_fn(pair):
        seen.append(pair)
        return {"x": pair[0], "y": pair[1]}

    loader = [(torch.randn(2, 4), torch.randn(2, 3)) for _ in range(3)]
    trainer = EagerTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), batch_fn=batch_fn)
    trainer.train(0, 3)
    assert seen == loader


def test_a_batch_the_default_batch_fn_cannot_read_is_a_clear_error():
    from libai.engine.trainer import default_batch_fn

    with pytest.raises(TypeError, match="give the trainer a batch_fn"):
        default_batch_fn((torch.zeros(1), torch.zeros(1)))


class _CountingHook:
    """A hook that remembers how many steps it saw (its state)."""

    def __init__(self):
        self.steps = 0

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_step(self):
        pass

    def after_step(self):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_trainer_state_dict_round_trips_every_hooks_state():
    from libai.engine.hooks import IterationTimer

    model = _Regressor()
    loader = _instances(torch.randn(4, 2, 4), torch.randn(4, 2, 3))
    trainer = EagerTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))
    first, second = _CountingHook(), _CountingHook()
    trainer.register_hooks([first, IterationTimer(), second])
    trainer.train(0, 3)
    second.steps = 7
    state = trainer.state_dict()
    assert state == {"iteration": 3, "hooks": {"_CountingHook": {"steps": 3}, "_CountingHook#2": {"steps": 7}}}

    resumed = EagerTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))
    hooks = [_CountingHook(), IterationTimer(), _CountingHook()]
    resumed.register_hooks(hooks)
    resumed.load_state_dict(state)
    assert (resumed.iter, hooks[0].steps, hooks[2].steps) == (3, 3, 7)


def test_the_checkpointer_saves_and_restores_the_trainers_state(tmp_path):
    from libai.engine.hooks import BestCheckpointer
    from libai.utils.checkpoint import Checkpointer

    def trainer_with_best_hook():
        model = _Regressor()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = EagerTrainer(model, [], optimizer)
        checkpointer = Checkpointer(model, str(tmp_path), trainer=trainer, optimizer=optimizer)
        best = BestCheckpointer(1, checkpointer, val_metric="acc")
        trainer.register_hooks([best])
        return trainer, checkpointer, best

    trainer, checkpointer, best = trainer_with_best_hook()
    best.best_metric, best.best_iter = 0.75, 4
    trainer.iter = 4
    checkpointer.save("model_0000004", iteration=4)

    _, fresh, fresh_best = trainer_with_best_hook()
    fresh.load_model_weights(str(tmp_path / "model_0000004"))  # weights only: no trainer state
    assert fresh_best.best_metric is None
    assert fresh.resume_or_load(None, resume=True) == {"iteration": 4}
    assert (fresh_best.best_metric, fresh_best.best_iter) == (0.75, 4)


def test_an_ignored_libai_argument_is_logged_once_by_name(caplog):
    from libai.layers import MLP
    from libai.utils import logger

    logger._log_ignored_once.cache_clear()  # other tests of this process may have logged it
    with caplog.at_level(logging.INFO, logger="libai"):
        for _ in range(3):
            MLP(8, 16, bias_gelu_fusion=True, bias_dropout_fusion=False)
    lines = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert lines == [
        "MLP ignores bias_gelu_fusion (accepted for LiBai compatibility): fused kernels compute the same "
        "numbers; the bias is added in the matmul"
    ]
