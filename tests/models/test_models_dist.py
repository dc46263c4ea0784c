"""The model zoo under tp=2 and pp=2 (2 gloo processes): the first training step's losses
and every gradient equal the one-process step on the same batch, with no change to the
model code. One spawn for the module; the one-process reference runs in the test process
and is handed to the workers.
"""
from __future__ import annotations

import pytest
import torch

from tests.helpers.dist import run_on_ranks

TOL = 1e-5
MICRO = 2
GPT_CFG = dict(
    hidden_layers=2, vocab_size=32, hidden_size=16, ffn_hidden_size=32, num_attention_heads=4, max_seq_length=8
)
BERT_CFG = dict(
    vocab_size=32, hidden_size=16, hidden_layers=2, num_attention_heads=4, intermediate_size=32,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=8,
)
VIT_CFG = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=16, depth=2, num_heads=4, num_classes=10)


def build(name: str) -> torch.nn.Module:
    from libai.models import BertForPreTraining, GPTForPreTraining, VisionTransformer

    torch.manual_seed(0)
    return {
        "gpt": lambda: GPTForPreTraining(GPT_CFG),
        "bert": lambda: BertForPreTraining(BERT_CFG),
        "vit": lambda: VisionTransformer(**VIT_CFG),
    }[name]()


def batch(name: str) -> dict:
    gen = torch.Generator().manual_seed(1)
    if name == "gpt":
        ids = torch.randint(0, 32, (4, 8), generator=gen)
        return {"input_ids": ids, "labels": torch.roll(ids, -1, dims=1)}
    if name == "bert":
        ids = torch.randint(0, 32, (4, 8), generator=gen)
        mask = torch.ones(4, 8, dtype=torch.long)
        mask[1, 6:] = 0
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "tokentype_ids": torch.zeros_like(ids),
            "ns_labels": torch.tensor([0, 1, 1, 0]),
            "lm_labels": torch.randint(0, 32, (4, 8), generator=gen),
            "loss_mask": (torch.rand(4, 8, generator=gen) > 0.5).long(),
        }
    return {"images": torch.randn(4, 1, 28, 28, generator=gen), "labels": torch.randint(0, 10, (4,), generator=gen)}


def micro_batches(fields: dict) -> list[dict]:
    rows = next(iter(fields.values())).shape[0] // MICRO
    return [{k: v[i * rows : (i + 1) * rows] for k, v in fields.items()} for i in range(MICRO)]


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (gathered over tensor-parallel ranks); a plain one as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def one_step(model: torch.nn.Module, fields: dict) -> tuple[dict, dict]:
    """(mean losses over micro-batches, gradients summed over micro-batches) of one step."""
    totals: dict = {}
    for micro in micro_batches(fields):
        losses = model(**micro)
        sum(losses.values()).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + v.item() / MICRO
    grads = {n: full(p.grad).clone() for n, p in model.named_parameters()}
    return totals, grads


def reference() -> dict:
    from libai.utils import distributed as dist

    dist.setup_dist_util({}, device="cpu")
    return {name: one_step(build(name), batch(name)) for name in ("gpt", "bert", "vit")}


def _compare(losses: dict, grads: dict, ref: tuple) -> dict:
    ref_losses, ref_grads = ref
    errors = {f"loss {k}": abs(losses[k] - ref_losses[k]) for k in ref_losses}
    errors.update({f"grad {n}": (g - ref_grads[n]).abs().max().item() for n, g in grads.items()})
    return errors


def _tp2(refs: dict) -> dict:
    from libai.utils import distributed as dist

    dist.setup_dist_util({"tensor_parallel_size": 2}, device="cpu")
    return {name: _compare(*one_step(build(name), batch(name)), refs[name]) for name in refs}


def _pp2(refs: dict) -> dict:
    from libai.engine.pipeline import build_pipeline
    from libai.utils import distributed as dist

    results = {}
    for name in refs:
        dist.setup_dist_util({"pipeline_parallel_size": 2, "pipeline_num_layers": 2}, device="cpu")
        engine = build_pipeline(build(name), MICRO, "1F1B")
        losses = {k: v.item() for k, v in engine.step(batch(name)).items()}
        dist.sync_first_last_grads(engine.shared_parameters())
        grads = {n: full(p.grad) for n, p in engine.named_parameters()}
        results[name] = dict(errors=_compare(losses, grads, refs[name]), owned=sorted(grads))
    return results


def run_checks(refs: dict) -> dict:
    """Worker: tp=2, then pp=2."""
    return {"tp2": _tp2(refs), "pp2": _pp2(refs)}


@pytest.fixture(scope="module")
def ranks():
    return run_on_ranks(run_checks, 2, reference())


@pytest.mark.parametrize("model", ["gpt", "bert", "vit"])
def test_tp2_step_equals_one_process(ranks, model):
    for rank, result in enumerate(ranks):
        errors = result["tp2"][model]
        bad = {k: v for k, v in errors.items() if not v <= TOL}
        assert not bad, f"rank {rank}: {bad}"
        assert any(k.startswith("grad") for k in errors)


@pytest.mark.parametrize("model", ["gpt", "bert", "vit"])
def test_pp2_step_equals_one_process(ranks, model):
    owned = set()
    for rank, result in enumerate(ranks):
        errors = result["pp2"][model]["errors"]
        bad = {k: v for k, v in errors.items() if not v <= TOL}
        assert not bad, f"rank {rank}: {bad}"
        owned.update(result["pp2"][model]["owned"])
    # Between them, the two stages train every parameter.
    assert owned == {n for n, _ in build(model).named_parameters()}
