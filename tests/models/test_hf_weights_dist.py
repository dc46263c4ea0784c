"""Hugging Face weights on 2 gloo processes: tp=2 (real MiniLM and GPT-2 equal to the plain
PyTorch references, a random RoBERTa masked LM equal to transformers'), and export -> import round trips under tp=2, pp=2 and dp=2.

One spawn for the whole module: every layout runs inside the workers, which return plain
Python values.
"""
from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.dist import run_on_ranks
from tests.models.hf_reference import (
    GPT2_CONFIG,
    SENTENCES,
    minilm_path,
    padded_batch,
    random_gpt2_state,
    random_hf_roberta,
    read_hf_checkpoint,
    reference_bert,
    reference_gpt2_logits,
    roberta_batch,
    write_hf_checkpoint,
)

TOL = 1e-4


def _same_as_source(source_dir: str, exported_dir: str, prefix: str = "") -> dict:
    """Whether an exported checkpoint holds exactly the source's weights (buffers aside)."""
    _, source = read_hf_checkpoint(source_dir)
    _, exported = read_hf_checkpoint(exported_dir)
    expected = {prefix + k: v for k, v in source.items() if not k.endswith((".attn.bias", "position_ids"))}
    return dict(
        same_names=set(exported) == set(expected),
        same_values=all(torch.equal(exported[k], expected[k]) for k in expected if k in exported),
    )


def _export_and_compare(model, source_dir: str, out_dir: str, prefix: str = "") -> dict:
    from libai.models.utils.model_loader import export_to_huggingface
    from libai.utils import distributed as dist

    export_to_huggingface(model, out_dir)
    # Every rank returns from the collective export only once the files are written.
    return _same_as_source(source_dir, out_dir, prefix) if dist.get_rank() == 0 else {}


def _roberta_tp2_checks(roberta_dir: str, roberta_logits: torch.Tensor, out_root: str) -> dict:
    from libai.models import RobertaForPreTraining
    from libai.models.utils.model_loader import load_huggingface_roberta

    model = load_huggingface_roberta(roberta_dir, RobertaForPreTraining).eval()
    ids, mask = roberta_batch()
    with torch.no_grad():
        scores = model(ids, mask)["prediction_scores"]
    return dict(
        error=(scores - roberta_logits).abs().max().item(),
        # The vocabulary really is split: each rank holds half of the word embeddings.
        local_vocab_rows=model.roberta.embeddings.vocab_embeddings.weight.to_local().shape[0],
        round_trip=_export_and_compare(model, roberta_dir, os.path.join(out_root, "tp2_roberta")),
    )


def _tp2_checks(gpt2_dir: str, out_root: str, roberta_dir: str, roberta_logits: torch.Tensor) -> dict:
    from libai.models.utils.model_loader import load_huggingface_bert, load_huggingface_gpt2
    from libai.utils import distributed as dist

    dist.setup_dist_util({"tensor_parallel_size": 2}, device="cpu")
    torch.manual_seed(0)
    bert = load_huggingface_bert(minilm_path()).eval()
    ids, mask = padded_batch(SENTENCES)
    config, state = read_hf_checkpoint(minilm_path())
    ref_sequence, ref_pooled = reference_bert(state, config, ids, mask)
    with torch.no_grad():
        sequence, pooled = bert(ids, mask)
    gpt_config, gpt_state = read_hf_checkpoint(gpt2_dir)
    gpt = load_huggingface_gpt2(gpt2_dir).eval()
    tokens = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = dist.gather_from_tensor_parallel_region(gpt(tokens))
    return dict(
        bert_error=(sequence - ref_sequence).abs().max().item(),
        pooled_error=(pooled - ref_pooled).abs().max().item(),
        # Heads really are split: each rank holds 6 of MiniLM's 12 heads.
        qkv_local_rows=bert.encoders[0].self_attention.query_key_value.weight.to_local().shape[0],
        gpt_error=(logits - reference_gpt2_logits(gpt_state, gpt_config, tokens)).abs().max().item(),
        bert_round_trip=_export_and_compare(bert, minilm_path(), os.path.join(out_root, "tp2_bert")),
        gpt_round_trip=_export_and_compare(gpt, gpt2_dir, os.path.join(out_root, "tp2_gpt")),
        roberta=_roberta_tp2_checks(roberta_dir, roberta_logits, out_root),
    )


def _round_trip_checks(layout: dict, gpt2_dir: str, out_root: str, name: str) -> dict:
    from libai.models import GPTForPreTraining
    from libai.models.utils.model_loader import load_huggingface_bert, load_huggingface_gpt2
    from libai.utils import distributed as dist

    results = {}
    for family, num_layers in (("gpt", GPT2_CONFIG["n_layer"]), ("bert", 6)):
        dist.setup_dist_util({**layout, "pipeline_num_layers": num_layers}, device="cpu")
        torch.manual_seed(0)
        if family == "gpt":
            model, source, prefix = load_huggingface_gpt2(gpt2_dir, GPTForPreTraining), gpt2_dir, "transformer."
        else:
            model, source, prefix = load_huggingface_bert(minilm_path()), minilm_path(), ""
        held = sum(1 for p in model.parameters() if dist.holds(p))
        results[family] = dict(
            held=held,
            total=len(list(model.parameters())),
            **_export_and_compare(model, source, os.path.join(out_root, f"{name}_{family}"), prefix),
        )
    return results


def run_checks(gpt2_dir: str, out_root: str, roberta_dir: str, roberta_logits: torch.Tensor) -> dict:
    """Worker: every layout in turn (the mesh is rebuilt each time)."""
    return dict(
        tp2=_tp2_checks(gpt2_dir, out_root, roberta_dir, roberta_logits),
        pp2=_round_trip_checks({"pipeline_parallel_size": 2}, gpt2_dir, out_root, "pp2"),
        dp2=_round_trip_checks({"data_parallel_size": 2}, gpt2_dir, out_root, "dp2"),
    )


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    gpt2_dir = write_hf_checkpoint(str(tmp_path_factory.mktemp("gpt2")), GPT2_CONFIG, random_gpt2_state(seed=7))
    roberta_dir = str(tmp_path_factory.mktemp("roberta"))
    ids, mask = roberta_batch()
    with torch.no_grad():
        roberta_logits = random_hf_roberta(roberta_dir, "RobertaForMaskedLM", seed=7)(input_ids=ids, attention_mask=mask).logits
    return run_on_ranks(run_checks, 2, gpt2_dir, str(tmp_path_factory.mktemp("exports")), roberta_dir, roberta_logits)


def test_tp2_minilm_and_gpt2_match_the_references(ranks):
    for rank, result in enumerate(ranks):
        tp2 = result["tp2"]
        assert tp2["qkv_local_rows"] == 3 * 384 // 2
        assert tp2["bert_error"] < TOL and tp2["pooled_error"] < TOL, f"rank {rank}: {tp2}"
        assert tp2["gpt_error"] < TOL, f"rank {rank}: {tp2}"


def test_tp2_roberta_masked_lm_matches_transformers(ranks):
    for rank, result in enumerate(ranks):
        roberta = result["tp2"]["roberta"]
        assert roberta["local_vocab_rows"] == 96 // 2
        assert roberta["error"] < TOL, f"rank {rank}: {roberta}"
    assert ranks[0]["tp2"]["roberta"]["round_trip"] == {"same_names": True, "same_values": True}


def test_tp2_export_round_trips_exactly(ranks):
    tp2 = ranks[0]["tp2"]
    assert tp2["bert_round_trip"] == {"same_names": True, "same_values": True}
    assert tp2["gpt_round_trip"] == {"same_names": True, "same_values": True}


@pytest.mark.parametrize("layout", ["pp2", "dp2"])
def test_round_trips_exactly_under_other_layouts(ranks, layout):
    for family in ("gpt", "bert"):
        result = ranks[0][layout][family]
        assert (result["same_names"], result["same_values"]) == (True, True), f"{layout} {family}: {result}"


def test_pipeline_ranks_hold_only_their_stage(ranks):
    for family in ("gpt", "bert"):
        held = [r["pp2"][family]["held"] for r in ranks]
        total = ranks[0]["pp2"][family]["total"]
        # Each stage holds part of the model; the tied word embeddings are held by both.
        assert all(0 < h < total for h in held) and sum(held) == total + 1, (family, held, total)
        assert all(r["dp2"][family]["held"] == total for r in ranks)
