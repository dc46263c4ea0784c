"""Pipeline parallelism (`libai.engine.pipeline`) on real gloo processes.

A tiny GPT written with plain torch modules (only `layer_idx` attributes say where its
parts go) is trained one step under pp=2 and dp=2 x pp=2 with 4 micro-batches, with the
GPipe, 1F1B and interleaved 1F1B schedules; its losses and every parameter's gradient
must equal the one-process step on the same global batch. Processes are started once per
world size; every check runs inside one worker and returns plain Python data.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.dist import run_on_ranks

VOCAB, HIDDEN, LAYERS, SEQ, BATCH, MICRO = 32, 16, 4, 8, 8, 4
TOL = 1e-5


class TokenEmbedding(nn.Module):
    """Word embedding on layer 0."""

    def __init__(self, num: int, hidden: int) -> None:
        super().__init__()
        self.layer_idx = 0
        self.weight = nn.Parameter(torch.randn(num, hidden) * 0.5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class ResidualBlock(nn.Module):
    """Pre-LN causal self-attention + MLP, both residual; padding mask on the MLP output."""

    def __init__(self, hidden: int, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, 2, batch_first=True)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = nn.Linear(2 * hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        causal = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)))) * mask.unsqueeze(-1)


class TinyGPT(nn.Module):
    """Embeddings (layer 0), residual blocks (layers 0..L-1), final norm + head + loss (-1)."""

    def __init__(self, skip_connection: bool = False, tied_head: bool = False) -> None:
        super().__init__()
        self.skip_connection = skip_connection
        self.tied_head = tied_head
        self.tokens = TokenEmbedding(VOCAB, HIDDEN)
        self.positions = nn.Embedding(SEQ, HIDDEN)
        self.positions.layer_idx = 0
        self.layers = nn.ModuleList([ResidualBlock(HIDDEN, i) for i in range(LAYERS)])
        self.final_norm = nn.LayerNorm(HIDDEN)
        self.final_norm.layer_idx = -1
        self.lm_head = nn.Linear(HIDDEN, VOCAB)
        self.lm_head.layer_idx = -1
        self.loss_func = nn.CrossEntropyLoss()
        self.loss_func.layer_idx = -1

    def forward(self, input_ids, attention_mask, labels) -> dict:
        positions = torch.arange(input_ids.shape[1])
        embedded = self.tokens(input_ids) + self.positions(positions)
        hidden = embedded
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        if self.skip_connection:  # reads a first-stage value on the last stage
            hidden = hidden + embedded
        hidden = self.final_norm(hidden)
        if self.tied_head:  # the stage-0 word embedding used on the last stage
            logits = F.linear(hidden, self.tokens.weight)
        else:
            logits = self.lm_head(hidden)
        return {
            "lm_loss": self.loss_func(logits.flatten(0, 1), labels.flatten()),
            "z_loss": 1e-2 * logits.pow(2).mean(),
        }


def global_batch(step: int = 0) -> dict:
    """The same global batch in every process."""
    gen = torch.Generator().manual_seed(100 + step)
    return {
        "input_ids": torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen),
        "attention_mask": (torch.rand(BATCH, SEQ, generator=gen) > 0.25).float(),
        "labels": torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen),
    }


def one_process_reference(steps: int = 1, lr: float = 0.1) -> list[tuple[dict, dict]]:
    """(losses, gradients) of each SGD step on one process, for the whole global batch."""
    torch.manual_seed(0)
    model = TinyGPT()
    out = []
    for step in range(steps):
        losses = model(**global_batch(step))
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        out.append(({k: v.item() for k, v in losses.items()}, grads))
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
                p.grad = None
    return out


# --------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------


def _local_batch(step: int = 0) -> dict:
    from libai.utils import distributed as dist

    size, rank = dist.get_data_parallel_size(), dist.get_data_parallel_rank()
    rows = BATCH // size
    return {k: v[rank * rows : (rank + 1) * rows] for k, v in global_batch(step).items()}


def _mean_grads(engine, summed_over_micro: bool) -> dict:
    """Owned gradients as the global-batch mean (sum over dp replicas / #micro-batches)."""
    import torch.distributed as torch_dist

    from libai.utils import distributed as dist

    out = {}
    for name, p in engine.named_parameters():
        grad = p.grad.detach().clone()
        if summed_over_micro:
            if dist.get_data_parallel_size() > 1:
                torch_dist.all_reduce(grad, group=dist.get_data_parallel_group())
            grad /= MICRO * dist.get_data_parallel_size()
        out[name] = grad.tolist()
    return out


def _dp_mean(losses: dict) -> dict:
    from libai.utils import distributed as dist

    keys = sorted(losses)
    means = dist.all_reduce_mean_data_parallel(torch.stack([losses[k] for k in keys]))
    return dict(zip(keys, means.tolist()))


def _train_one(schedule: str, use_reducer: bool = False) -> dict:
    from libai.engine.pipeline import build_pipeline
    from libai.utils import distributed as dist

    torch.manual_seed(0)
    engine = build_pipeline(TinyGPT(), MICRO, schedule)
    if use_reducer:
        reducer = dist.GradientReducer(engine.parameters(), MICRO)
        engine.on_microbatch_backward = reducer.accumulate
    losses = engine.step(_local_batch())
    if use_reducer:
        reducer.reduce()
    return {
        "blocks": engine.block_names(),
        "losses": _dp_mean(losses),
        "grads": _mean_grads(engine, summed_over_micro=not use_reducer),
        "frozen_meta": sorted(
            n for n, p in engine.model.named_parameters() if p.is_meta and not p.requires_grad
        ),
    }


def _train_variant(schedule: str, variant: str) -> dict:
    """One step of `schedule` with a loss scale of 8 (gradients come back divided by it),
    or with every block compiled (`torch.compile`, aot_eager: the mechanism, quickly)."""
    from libai.engine.pipeline import build_pipeline

    torch.manual_seed(0)
    engine = build_pipeline(TinyGPT(), MICRO, schedule)
    if variant == "loss_scale":
        engine.loss_scale = lambda loss: loss * 8.0
    else:
        compiled = engine.compile_blocks(lambda fn: torch.compile(fn, backend="aot_eager"))
        assert compiled == engine.block_names()
    losses = engine.step(_local_batch())
    if variant == "loss_scale":
        for p in engine.parameters():
            p.grad /= 8.0
    return {"blocks": engine.block_names(), "losses": _dp_mean(losses), "grads": _mean_grads(engine, True)}


def _train_zero_interleaved(stage: int) -> dict:
    """ZeRO `stage` (FSDP2 over dp, root on the rank's first virtual stage) with two
    virtual stages per rank: gradients are this rank's shards of the mean."""
    from libai.engine.pipeline import build_pipeline
    from libai.layers.utils import full_tensor
    from libai.utils.zero import apply_zero

    torch.manual_seed(0)
    engine = build_pipeline(TinyGPT(), MICRO, "Interleaved1F1B")
    _, reducer = apply_zero(
        engine.stages[0].submod, stage, MICRO, pipeline=True, ignored_params=set(engine.foreign_parameters())
    )
    engine.refresh_parameters()
    engine.on_microbatch_backward = reducer.accumulate
    losses = engine.step(_local_batch())
    reducer.reduce()
    grads = {n: full_tensor(p.grad).tolist() for n, p in engine.named_parameters()}
    return {"losses": _dp_mean(losses), "grads": grads}


def _two_sgd_steps() -> list[dict]:
    from libai.engine.pipeline import build_pipeline

    torch.manual_seed(0)
    engine = build_pipeline(TinyGPT(), MICRO, "1F1B")
    out = []
    for step in range(2):
        out.append(_dp_mean(engine.step(_local_batch(step))))
        with torch.no_grad():
            for p in engine.parameters():
                p -= 0.1 * p.grad / MICRO
                p.grad = None
    return out


def _micro_batch_list_steps(schedule: str) -> dict:
    """Steps given the list of micro-batches: the stage computes with the loader's tensors
    themselves (no concatenation), and after the first step (shape inference, loss names)
    no pickled object crosses between ranks."""
    import torch.distributed as torch_dist

    from libai.engine.pipeline import build_pipeline

    object_calls = {"count": 0}
    names = ("broadcast_object_list", "send_object_list", "recv_object_list", "all_gather_object")
    originals = {name: getattr(torch_dist, name) for name in names}

    def counted(fn):
        def wrapper(*args, **kwargs):
            object_calls["count"] += 1
            return fn(*args, **kwargs)

        return wrapper

    torch.manual_seed(0)
    model = TinyGPT()
    seen_ids = []
    model.tokens.register_forward_hook(lambda m, args, out: seen_ids.append(args[0].data_ptr()))
    engine = build_pipeline(model, MICRO, schedule)
    batch = _local_batch()
    rows = batch["input_ids"].shape[0] // MICRO
    micro_batches = [{k: v[i * rows : (i + 1) * rows].clone() for k, v in batch.items()} for i in range(MICRO)]
    object_calls_per_step = []
    for name in names:
        setattr(torch_dist, name, counted(originals[name]))
    try:
        for step in range(3):
            object_calls["count"] = 0
            seen_ids.clear()
            losses = engine.step(micro_batches)
            object_calls_per_step.append(object_calls["count"])
            if step == 0:
                grads = _mean_grads(engine, summed_over_micro=True)
                first_losses = _dp_mean(losses)
            for p in engine.parameters():
                p.grad = None
    finally:
        for name, fn in originals.items():
            setattr(torch_dist, name, fn)
    loader_ids = [mb["input_ids"].data_ptr() for mb in micro_batches]
    return {
        "losses": first_losses,
        "grads": grads,
        "object_calls_per_step": object_calls_per_step,
        # Every stage replays forward; the first one computes with the token ids.
        "stage_saw_loader_tensors": set(seen_ids) == set(loader_ids) if engine.is_first else None,
        "wrong_count": _error(lambda: engine.step(micro_batches[:-1])),
    }


def _error(fn) -> str:
    try:
        fn()
    except Exception as err:  # the test asserts on the message
        return f"{type(err).__name__}: {err}"
    return "no error"


def _worker_pp2() -> dict:
    from libai.engine.pipeline import build_pipeline
    from libai.utils import distributed as dist

    dist.setup_dist_util({"pipeline_parallel_size": 2, "pipeline_num_layers": LAYERS}, device="cpu")
    result = {s: _train_one(s) for s in ("GPipe", "1F1B", "Interleaved1F1B")}
    result["two_steps"] = _two_sgd_steps()
    result["list_1F1B"] = _micro_batch_list_steps("1F1B")
    result["list_Interleaved1F1B"] = _micro_batch_list_steps("Interleaved1F1B")
    result["loss_scale"] = _train_variant("1F1B", "loss_scale")
    result["compiled"] = _train_variant("1F1B", "compiled")
    result["no_layer_idx"] = _error(lambda: build_pipeline(nn.Sequential(nn.Linear(2, 2)), MICRO))
    result["bad_schedule"] = _error(lambda: build_pipeline(TinyGPT(), MICRO, "ZeroBubble"))

    def local_forward(**model_kwargs):
        # Run the stage module directly (no communication), so that the failing rank does not
        # leave its peer waiting: the last stage gets a received hidden state.
        torch.manual_seed(0)
        engine = build_pipeline(TinyGPT(**model_kwargs), MICRO, "GPipe")
        received = () if engine.is_first else (torch.zeros(BATCH, SEQ, HIDDEN),)
        engine.stages[0].submod(*received, **_local_batch())

    result["skip_connection"] = _error(lambda: local_forward(skip_connection=True))
    result["tied_head"] = _error(lambda: local_forward(tied_head=True))
    # A custom split: three layers on stage 0, one on stage 1.
    dist.setup_dist_util(
        {"pipeline_parallel_size": 2, "pipeline_num_layers": LAYERS, "custom_pipeline_stage_id": [0, 0, 0, 1]},
        device="cpu",
    )
    result["custom"] = _train_one("GPipe")
    return result


def _worker_dp2_pp2() -> dict:
    from libai.utils import distributed as dist

    dist.setup_dist_util({"pipeline_parallel_size": 2, "pipeline_num_layers": LAYERS}, device="cpu")
    return {
        "GPipe": _train_one("GPipe"),
        "1F1B": _train_one("1F1B", use_reducer=True),
        "zero2_interleaved": _train_zero_interleaved(2),
        "zero3_interleaved": _train_zero_interleaved(3),
        "coords": [dist.get_data_parallel_rank(), dist.get_pipeline_parallel_rank()],
    }


# --------------------------------------------------------------------------------------
# Test side
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
    return one_process_reference(steps=2)


@pytest.fixture(scope="module")
def pp2():
    return run_on_ranks(_worker_pp2, 2)


@pytest.fixture(scope="module")
def dp2_pp2():
    return run_on_ranks(_worker_dp2_pp2, 4)


def _check_equal_to_reference(ranks: list[dict], reference, num_stages_ranks: int) -> None:
    ref_losses, ref_grads = reference[0]
    for rank in ranks:  # every rank reports the (broadcast, dp-averaged) losses
        for key, value in ref_losses.items():
            assert abs(rank["losses"][key] - value) < TOL, (key, rank["losses"][key], value)
    seen: dict[str, list] = {}
    for rank in ranks:
        for name, grad in rank["grads"].items():
            seen.setdefault(name, []).append(torch.tensor(grad))
    assert sorted(seen) == sorted(ref_grads), "every parameter is owned by some stage"
    for name, grads in seen.items():
        # dp replicas of a stage hold the same mean gradient; stages own disjoint parameters
        assert len(grads) == len(ranks) // num_stages_ranks
        for grad in grads:
            diff = (grad - ref_grads[name]).abs().max().item()
            assert diff < TOL, (name, diff)


@pytest.mark.parametrize("schedule", ["GPipe", "1F1B", "Interleaved1F1B"])
def test_pp2_equals_one_process(pp2, reference, schedule):
    _check_equal_to_reference([r[schedule] for r in pp2], reference, num_stages_ranks=2)


def test_pp2_stage_assignment_and_dropped_parameters(pp2):
    first, last = pp2[0]["1F1B"], pp2[1]["1F1B"]
    assert first["blocks"] == ["tokens", "positions", "layers.0", "layers.1"]
    assert last["blocks"] == ["layers.2", "layers.3", "final_norm", "lm_head", "loss_func"]
    # The other stage's parameters are freed on each rank (meta, not trained).
    assert "lm_head.weight" in first["frozen_meta"] and "tokens.weight" in last["frozen_meta"]
    assert not set(first["grads"]) & set(first["frozen_meta"])
    # Interleaved: 4 virtual stages, virtual stage k on rank k % 2.
    assert pp2[0]["Interleaved1F1B"]["blocks"] == ["tokens", "positions", "layers.0", "layers.2"]
    assert pp2[1]["Interleaved1F1B"]["blocks"] == ["layers.1", "layers.3", "final_norm", "lm_head", "loss_func"]


def test_pp2_custom_pipeline_stage_id(pp2, reference):
    ranks = [r["custom"] for r in pp2]
    assert ranks[0]["blocks"] == ["tokens", "positions", "layers.0", "layers.1", "layers.2"]
    assert ranks[1]["blocks"] == ["layers.3", "final_norm", "lm_head", "loss_func"]
    _check_equal_to_reference(ranks, reference, num_stages_ranks=2)


def test_pp2_second_step_continues_like_one_process(pp2, reference):
    for rank in pp2:
        for step in range(2):
            for key, value in reference[step][0].items():
                assert abs(rank["two_steps"][step][key] - value) < TOL, (step, key)


@pytest.mark.parametrize("schedule", ["1F1B", "Interleaved1F1B"])
def test_pp2_micro_batch_list_is_used_as_is(pp2, reference, schedule):
    ranks = [r[f"list_{schedule}"] for r in pp2]
    _check_equal_to_reference(ranks, reference, num_stages_ranks=2)
    assert ranks[0]["stage_saw_loader_tensors"] is True
    for rank in ranks:
        first, *later = rank["object_calls_per_step"]
        assert first > 0 and later == [0, 0], rank["object_calls_per_step"]
        assert "step got 3 micro-batches, but the pipeline runs 4 per step" in rank["wrong_count"]


def test_pp2_clear_errors(pp2):
    for rank in pp2:
        assert "has no submodule with a `layer_idx`" in rank["no_layer_idx"]
        assert "unknown pipeline schedule 'ZeroBubble'" in rank["bad_schedule"]
    # Only the last stage reads the first stage's embedding output.
    assert pp2[0]["skip_connection"] == "no error"
    assert "PipelineError" in pp2[1]["skip_connection"]
    assert "skip connection across stages" in pp2[1]["skip_connection"]
    assert pp2[0]["tied_head"] == "no error"
    assert "PipelineError: tokens.weight belongs to another pipeline stage" in pp2[1]["tied_head"]


@pytest.mark.parametrize("variant", ["loss_scale", "compiled"])
def test_pp2_loss_scale_and_compiled_blocks_equal_one_process(pp2, reference, variant):
    _check_equal_to_reference([r[variant] for r in pp2], reference, num_stages_ranks=2)


@pytest.mark.parametrize("schedule", ["GPipe", "1F1B", "zero2_interleaved", "zero3_interleaved"])
def test_dp2_pp2_equals_one_process(dp2_pp2, reference, schedule):
    # ranks 0, 1: stage 0 (dp 0, 1); ranks 2, 3: stage 1
    assert [r["coords"] for r in dp2_pp2] == [[0, 0], [1, 0], [0, 1], [1, 1]]
    _check_equal_to_reference([r[schedule] for r in dp2_pp2], reference, num_stages_ranks=2)


def test_find_blocks_without_layer_idx_is_a_clear_error():
    from libai.engine.pipeline import PipelineError, find_blocks

    with pytest.raises(PipelineError, match="has no submodule with a `layer_idx`"):
        find_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    names = [name for name, _, _ in find_blocks(TinyGPT())]
    # Outermost tagged modules only (the blocks' inner Linear layers are not blocks).
    assert names == ["tokens", "positions"] + [f"layers.{i}" for i in range(LAYERS)] + [
        "final_norm",
        "lm_head",
        "loss_func",
    ]


# --------------------------------------------------------------------------------------
# The one reliance on torch.distributed.pipelining beyond plain use
# --------------------------------------------------------------------------------------


def _hook_contract_worker() -> dict:
    """On one rank: every schedule calls the stage's backward hook once per micro-batch,
    after that micro-batch's gradient is in `.grad` (a running sum of micro-batch grads)."""
    import torch.distributed as torch_dist
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

    from libai.engine.pipeline import make_stage_with_backward_hook

    torch_dist.init_process_group("gloo", rank=0, world_size=1)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, cls, num_stages in (
        ("GPipe", ScheduleGPipe, 1),
        ("1F1B", Schedule1F1B, 1),
        ("Interleaved1F1B", ScheduleInterleaved1F1B, 2),
    ):
        torch.manual_seed(0)
        layers = [nn.Linear(3, 3) for _ in range(num_stages)]
        seen: list[list] = [[] for _ in layers]
        stages = [
            make_stage_with_backward_hook(
                layer, k, num_stages, torch.device("cpu"), None,
                lambda k=k: seen[k].append(layers[k].weight.grad.clone()),
            )
            for k, layer in enumerate(layers)
        ]
        loss_fn = lambda output, target: output.pow(2).sum()  # noqa: E731 - the schedule's loss
        schedule = cls(stages if num_stages > 1 else stages[0], 4, loss_fn=loss_fn, scale_grads=False)
        schedule.step(x, target=torch.zeros(4))
        # The same sums by hand, one micro-batch (one row) at a time.
        expected: list[list] = [[] for _ in layers]
        for p in (w for layer in layers for w in layer.parameters()):
            p.grad = None
        for row in x.split(1):
            h = row
            for layer in layers:
                h = layer(h)
            h.pow(2).sum().backward()
            for k, layer in enumerate(layers):
                expected[k].append(layer.weight.grad.clone())
        out[name] = max(
            (a - b).abs().max().item() if len(s) == len(e) else float("inf")
            for s, e in zip(seen, expected)
            for a, b in zip(s, e)
        ) if all(seen) else float("inf"), [len(s) for s in seen]
    return out


def test_stage_backward_hook_contract():
    import inspect

    from torch.distributed.pipelining import PipelineStage

    assert "dw_builder" in inspect.signature(PipelineStage).parameters, "torch dropped dw_builder"
    (res,) = run_on_ranks(_hook_contract_worker, 1)
    for name, (diff, counts) in res.items():
        assert counts == [4] * len(counts), (name, counts)
        assert diff < 1e-6, (name, diff)
