"""Unit tests of the engine's pieces: batch sizes, auto-scaling, the step, graph fallback."""
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


def _one_step(model, batches, accum, max_norm):
    optimizer = torch.optim.SGD(
        [dict(params=list(model.parameters()), clip_grad_max_norm=max_norm, clip_grad_norm_type=2.0)], lr=0.1
    )
    reducer = dist.make_gradient_reducer(model, accum)
    trainer = EagerTrainer(model, batches, optimizer, grad_acc_steps=accum, grad_reducer=reducer)
    grads = {}
    real_step = optimizer.step

    def record_then_step():
        grads.update({n: p.grad.clone() for n, p in model.named_parameters()})
        real_step()

    optimizer.step = record_then_step
    with EventStorage(0) as storage:
        trainer.run_step(_get_batch)
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
    """The float64 sum makes the update independent of how the batch is split and ordered."""
    torch.manual_seed(1)
    xs, ys = torch.randn(4, 8, 4) * 100, torch.randn(4, 8, 3)
    model = _Regressor()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    forward_grads, _ = _one_step(model, _batches(xs, ys), accum=4, max_norm=None)
    model.load_state_dict(state)
    order = [2, 0, 3, 1]
    shuffled_grads, _ = _one_step(model, _batches(xs[order], ys[order]), accum=4, max_norm=None)
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
