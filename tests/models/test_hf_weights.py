"""Hugging Face weights on one process: real MiniLM BERT and a random GPT-2 against plain
PyTorch references, export -> import round trips, and one-line errors."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from libai.layers.utils import full_tensor
from libai.models import (
    BertForClassification,
    BertForPreTraining,
    BertModel,
    GPTForPreTraining,
    GPTModel,
    RobertaForCausalLM,
    RobertaForPreTraining,
    RobertaModel,
)
from libai.models.utils.model_loader import (
    BertLoaderHuggerFace,
    GPT2LoaderHuggerFace,
    HuggingFaceCheckpointError,
    export_to_huggingface,
    load_huggingface_bert,
    load_huggingface_gpt2,
    load_huggingface_roberta,
)
from libai.utils import distributed as dist
from tests.models.hf_reference import (
    GPT2_CONFIG,
    SENTENCES,
    minilm_path,
    padded_batch,
    random_gpt2_state,
    read_hf_checkpoint,
    reference_bert,
    random_hf_roberta,
    reference_gpt2_logits,
    roberta_batch,
    write_hf_checkpoint,
)

TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_process_layout():
    dist.setup_dist_util({}, device="cpu")


@pytest.fixture(scope="module")
def minilm():
    config, state = read_hf_checkpoint(minilm_path())
    return load_huggingface_bert(minilm_path()).eval(), config, state


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return write_hf_checkpoint(str(tmp_path_factory.mktemp("gpt2")), GPT2_CONFIG, random_gpt2_state())


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------------------
# Real MiniLM BERT
# --------------------------------------------------------------------------------------


def test_minilm_config_is_read(minilm):
    model, _, _ = minilm
    assert model.cfg["hidden_layers"] == 6 and model.cfg["hidden_size"] == 384
    assert model.cfg["num_attention_heads"] == 12 and model.cfg["layernorm_eps"] == 1e-12
    assert model.cfg["apply_residual_post_layernorm"] is True


@pytest.mark.parametrize("sentences", [SENTENCES[:1], SENTENCES], ids=["one-sentence", "padded-batch"])
def test_minilm_matches_reference_bert(minilm, sentences):
    model, config, state = minilm
    ids, mask = padded_batch(sentences)
    assert (mask == 0).any() == (len(sentences) > 1)
    with torch.no_grad():
        sequence, pooled = model(ids, mask)
    ref_sequence, ref_pooled = reference_bert(state, config, ids, mask)
    # Every position, padding included: only the keys are masked, as in Hugging Face.
    assert max_error(sequence, ref_sequence) < TOL
    assert max_error(pooled, ref_pooled) < TOL
    assert ref_sequence.abs().max() > 1.0  # real activations, not a degenerate comparison


def test_minilm_backbone_loads_into_models_with_new_heads(minilm, caplog):
    _, config, state = minilm
    ids, mask = padded_batch(SENTENCES)
    ref_sequence, _ = reference_bert(state, config, ids, mask)
    for model_class in (BertForPreTraining, BertForClassification):
        model = load_huggingface_bert(minilm_path(), model_class, num_labels=4).eval()
        with torch.no_grad():
            assert max_error(model.bert(ids, mask)[0], ref_sequence) < TOL
            model(ids, mask)
    assert "keeps its initialisation" in caplog.text


def test_minilm_export_reimport_round_trip(minilm, tmp_path):
    model, config, state = minilm
    export_to_huggingface(model, tmp_path)
    exported_config, exported = read_hf_checkpoint(str(tmp_path))
    # Every weight back under its Hugging Face name, bit for bit (position_ids is a buffer).
    assert set(exported) == set(state) - {"embeddings.position_ids"}
    assert all(torch.equal(exported[k], state[k]) for k in exported)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                "layer_norm_eps", "type_vocab_size", "max_position_embeddings", "hidden_act"):
        assert exported_config[key] == config[key], key
    assert exported_config["architectures"] == ["BertModel"]
    again = load_huggingface_bert(str(tmp_path))
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(full_tensor(p), full_tensor(q)), name


def test_bert_with_heads_round_trips_through_huggingface_names(tmp_path):
    torch.manual_seed(3)
    cfg = dict(vocab_size=64, hidden_size=32, hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=16,
               apply_residual_post_layernorm=True)
    model = BertForPreTraining(cfg)
    export_to_huggingface(model, tmp_path)
    hf_config, hf_state = read_hf_checkpoint(str(tmp_path))
    assert hf_config["architectures"] == ["BertForPreTraining"]
    assert "bert.encoder.layer.1.attention.self.value.weight" in hf_state
    heads = {"cls.predictions.bias", "cls.seq_relationship.weight", "cls.predictions.transform.LayerNorm.bias"}
    assert heads <= set(hf_state)
    again = BertLoaderHuggerFace(BertForPreTraining, None, tmp_path).load()
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(full_tensor(p), full_tensor(q)), name


# --------------------------------------------------------------------------------------
# GPT-2
# --------------------------------------------------------------------------------------


def test_gpt2_matches_reference(gpt2_dir):
    config, state = read_hf_checkpoint(gpt2_dir)
    model = load_huggingface_gpt2(gpt2_dir).eval()
    assert model.cfg["activation"] == "gelu_tanh" and model.cfg["ffn_hidden_size"] == 128
    ids = torch.randint(0, config["vocab_size"], (2, config["n_positions"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids)
    ref = reference_gpt2_logits(state, config, ids)
    assert max_error(logits, ref) < TOL
    assert ref.abs().max() > 1.0


def test_gpt2_lm_head_checkpoint_loads_into_gpt_for_pretraining(tmp_path):
    state = random_gpt2_state(seed=1, prefix="transformer.")
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    write_hf_checkpoint(str(tmp_path), GPT2_CONFIG, state)
    model = GPT2LoaderHuggerFace(GPTForPreTraining, None, tmp_path, embedding_dropout_prob=0.0).load().eval()
    ids = torch.randint(0, 96, (3, 9), generator=torch.Generator().manual_seed(1))
    plain = {k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")}
    ref = reference_gpt2_logits(plain, GPT2_CONFIG, ids)
    with torch.no_grad():
        scores = model(ids)["prediction_scores"]
        token_losses = model(ids, labels=ids)["lm_loss"]
    assert max_error(scores, ref) < TOL
    expected = torch.nn.functional.cross_entropy(ref.reshape(-1, 96), ids.reshape(-1), reduction="none")
    assert max_error(token_losses, expected.reshape(3, 9)) < TOL


def test_gpt2_export_reimport_round_trip(gpt2_dir, tmp_path):
    config, state = read_hf_checkpoint(gpt2_dir)
    model = load_huggingface_gpt2(gpt2_dir, GPTForPreTraining)
    export_to_huggingface(model, tmp_path)
    exported_config, exported = read_hf_checkpoint(str(tmp_path))
    expected = {f"transformer.{k}": v for k, v in state.items() if not k.endswith(".attn.bias")}
    assert set(exported) == set(expected)
    assert all(torch.equal(exported[k], expected[k]) for k in exported)
    assert exported_config["architectures"] == ["GPT2LMHeadModel"]
    assert exported_config["activation_function"] == "gelu_new"
    assert {k: exported_config[k] for k in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size")} == {
        k: config[k] for k in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size")
    }
    again = load_huggingface_gpt2(str(tmp_path), GPTForPreTraining)
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(full_tensor(p), full_tensor(q)), name


def test_loading_into_a_built_model_checks_its_architecture(gpt2_dir):
    built = GPTModel(hidden_layers=3, vocab_size=96, hidden_size=32, ffn_hidden_size=128, num_attention_heads=4,
                     max_seq_length=16, activation="gelu_tanh")
    assert GPT2LoaderHuggerFace(built, None, gpt2_dir).load() is built
    wrong = GPTModel(hidden_layers=3, vocab_size=96, hidden_size=32, ffn_hidden_size=128, num_attention_heads=4,
                     max_seq_length=16)
    message = "the model has activation='gelu' but the checkpoint needs 'gelu_tanh'"
    with pytest.raises(HuggingFaceCheckpointError, match=message):
        GPT2LoaderHuggerFace(wrong, None, gpt2_dir).load()


# --------------------------------------------------------------------------------------
# RoBERTa (random transformers models as the reference)
# --------------------------------------------------------------------------------------


def test_roberta_model_matches_transformers(tmp_path):
    hf = random_hf_roberta(str(tmp_path), "RobertaModel")
    model = load_huggingface_roberta(tmp_path).eval()
    assert model.cfg["pad_token_id"] == 1 and model.cfg["num_tokentypes"] == 1
    ids, mask = roberta_batch()
    with torch.no_grad():
        sequence, pooled = model(ids, mask)
        ref = hf(input_ids=ids, attention_mask=mask)
    # Every position, padding included (padding sits at position pad_token_id, as in transformers).
    assert max_error(sequence, ref.last_hidden_state) < TOL
    assert max_error(pooled, ref.pooler_output) < TOL
    assert ref.last_hidden_state.abs().max() > 1.0


def test_roberta_masked_lm_matches_transformers(tmp_path):
    hf = random_hf_roberta(str(tmp_path), "RobertaForMaskedLM", seed=1)
    model = load_huggingface_roberta(tmp_path, RobertaForPreTraining).eval()
    assert model.roberta.pooler is None
    ids, mask = roberta_batch()
    with torch.no_grad():
        scores = model(ids, mask)["prediction_scores"]
        token_losses = model(ids, mask, lm_labels=ids)["lm_loss"]
        ref = hf(input_ids=ids, attention_mask=mask).logits
    assert max_error(scores, ref) < TOL
    assert ref.abs().max() > 1.0
    expected = torch.nn.functional.cross_entropy(ref.reshape(-1, ref.shape[-1]), ids.reshape(-1), reduction="none")
    assert max_error(token_losses, expected.view_as(ids)) < TOL
    # Training: the mean over loss_mask.
    model.train()
    loss_mask = torch.zeros_like(ids, dtype=torch.float32)
    loss_mask[:, 1:3] = 1.0
    loss = model(ids, mask, lm_labels=ids, loss_mask=loss_mask)["lm_loss"]
    assert loss.item() == pytest.approx((expected.view_as(ids) * loss_mask).sum().item() / 6, rel=1e-5)


def test_roberta_causal_lm_matches_transformers(tmp_path):
    hf = random_hf_roberta(str(tmp_path), "RobertaForCausalLM", seed=2, is_decoder=True)
    model = load_huggingface_roberta(tmp_path, RobertaForCausalLM).eval()
    ids, mask = roberta_batch()
    with torch.no_grad():
        scores = model(ids, mask)["prediction_scores"]
        hf_out = hf(input_ids=ids, attention_mask=mask, labels=ids)
        token_losses = model(ids, mask, labels=ids)["lm_loss"]
    assert max_error(scores, hf_out.logits) < TOL
    # Causal: a later token does not change an earlier token's scores.
    changed = ids.clone()
    changed[:, -1] = 50
    with torch.no_grad():
        assert max_error(model(changed, mask)["prediction_scores"][:, :-1], scores[:, :-1]) < 1e-6
    # transformers' loss: next-token cross entropy over every token (padding labels included).
    assert token_losses.shape == (3, ids.shape[1] - 1)
    assert token_losses.mean().item() == pytest.approx(hf_out.loss.item(), rel=1e-5)


def test_roberta_export_loads_back_into_transformers(tmp_path):
    import transformers

    hf = random_hf_roberta(str(tmp_path / "source"), "RobertaForMaskedLM", seed=3)
    model = load_huggingface_roberta(tmp_path / "source", RobertaForPreTraining)
    export_to_huggingface(model, tmp_path / "exported")
    exported_config, exported = read_hf_checkpoint(str(tmp_path / "exported"))
    assert exported_config["model_type"] == "roberta" and exported_config["pad_token_id"] == 1
    assert exported_config["architectures"] == ["RobertaForMaskedLM"]
    _, source = read_hf_checkpoint(str(tmp_path / "source"))
    assert set(exported) == set(source)
    assert all(torch.equal(exported[k], source[k]) for k in exported)
    again = transformers.RobertaForMaskedLM.from_pretrained(str(tmp_path / "exported")).eval()
    ids, mask = roberta_batch()
    with torch.no_grad():
        assert max_error(again(input_ids=ids, attention_mask=mask).logits, hf(input_ids=ids, attention_mask=mask).logits) < TOL


def test_roberta_loader_rejects_other_families(tmp_path):
    random_hf_roberta(str(tmp_path), "RobertaModel")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(HuggingFaceCheckpointError, match="model_type 'bert': this loader reads RoBERTa") as err:
        load_huggingface_roberta(tmp_path)
    one_line(err)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HuggingFaceCheckpointError, match="pad_token_id=0 disagrees"):
        load_huggingface_roberta(tmp_path, pad_token_id=0)
    short = RobertaModel(load_huggingface_roberta(tmp_path).cfg)
    with pytest.raises(ValueError, match="22 tokens but max_position_embeddings=20 holds positions for 18"):
        short(torch.full((1, 22), 5), None)


# --------------------------------------------------------------------------------------
# One-line errors
# --------------------------------------------------------------------------------------


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_folder_and_files(tmp_path, gpt2_dir):
    with pytest.raises(HuggingFaceCheckpointError, match="does not exist") as err:
        load_huggingface_gpt2(tmp_path / "nope")
    one_line(err)
    broken = shutil.copytree(gpt2_dir, tmp_path / "no_weights")
    os.remove(broken / "model.safetensors")
    with pytest.raises(HuggingFaceCheckpointError, match="holds no weights: .* one of model.safetensors") as err:
        load_huggingface_gpt2(broken)
    one_line(err)
    (broken / "pytorch_model.bin").write_bytes(b"not a pickle")
    message = "pytorch_model.bin' cannot be read as PyTorch weights with weights_only=True .*convert it to safetensors"
    with pytest.raises(HuggingFaceCheckpointError, match=message) as err:
        load_huggingface_gpt2(broken)
    one_line(err)
    os.remove(broken / "config.json")
    with pytest.raises(HuggingFaceCheckpointError, match="config.json' is missing"):
        load_huggingface_gpt2(broken)


def test_corrupt_files(tmp_path, gpt2_dir):
    bad = shutil.copytree(gpt2_dir, tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(HuggingFaceCheckpointError, match="cannot be read as safetensors") as err:
        load_huggingface_gpt2(bad)
    one_line(err)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(HuggingFaceCheckpointError, match="is not valid JSON"):
        load_huggingface_gpt2(bad)


def test_override_that_disagrees_with_the_checkpoint(gpt2_dir):
    message = r"hidden_size=64 disagrees with the checkpoint \(32 from config.json\)"
    with pytest.raises(HuggingFaceCheckpointError, match=message) as err:
        load_huggingface_gpt2(gpt2_dir, hidden_size=64)
    one_line(err)
    # Non-architecture values may change.
    assert load_huggingface_gpt2(gpt2_dir, output_dropout_prob=0.0).cfg["output_dropout_prob"] == 0.0


def test_config_that_does_not_match_the_weights(tmp_path):
    state = random_gpt2_state()
    write_hf_checkpoint(str(tmp_path), {**GPT2_CONFIG, "n_inner": 64}, state)
    message = r"checkpoint gives shape \(128, 32\) but the model has \(64, 32\)"
    with pytest.raises(HuggingFaceCheckpointError, match=message) as err:
        load_huggingface_gpt2(tmp_path)
    one_line(err)


def test_missing_and_unexpected_keys(tmp_path):
    state = random_gpt2_state()
    del state["h.1.mlp.c_fc.bias"]
    write_hf_checkpoint(str(tmp_path / "missing"), GPT2_CONFIG, state)
    with pytest.raises(HuggingFaceCheckpointError, match="lacks 1 weight.*'h.1.mlp.c_fc.bias'") as err:
        load_huggingface_gpt2(tmp_path / "missing")
    one_line(err)
    state = {**random_gpt2_state(), "h.0.attn.rotary.weight": torch.zeros(2)}
    write_hf_checkpoint(str(tmp_path / "extra"), GPT2_CONFIG, state)
    with pytest.raises(HuggingFaceCheckpointError, match="1 weight.*match no parameter.*'h.0.attn.rotary.weight'"):
        load_huggingface_gpt2(tmp_path / "extra")


def test_unsupported_variants(tmp_path):
    cases = [
        ({"activation_function": "relu"}, "activation_function 'relu' is not supported"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
        ({"model_type": "llama"}, "model_type 'llama'"),
    ]
    for i, (change, message) in enumerate(cases):
        write_hf_checkpoint(str(tmp_path / str(i)), {**GPT2_CONFIG, **change}, random_gpt2_state())
        with pytest.raises(HuggingFaceCheckpointError, match=message):
            load_huggingface_gpt2(tmp_path / str(i))
    # A BERT variant: a small post-LN BERT exported, then its config.json changed.
    bert = BertModel(vocab_size=64, hidden_size=32, hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=16,
                     apply_residual_post_layernorm=True)
    folder = tmp_path / "bert"
    export_to_huggingface(bert, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu_new"}))
    with pytest.raises(HuggingFaceCheckpointError, match="hidden_act 'gelu_new' is not supported"):
        load_huggingface_bert(folder)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(HuggingFaceCheckpointError, match="apply_residual_post_layernorm=False disagrees"):
        load_huggingface_bert(folder, apply_residual_post_layernorm=False)


def test_exporting_models_without_a_huggingface_form(tmp_path):
    pre_ln = BertModel(vocab_size=64, hidden_size=32, hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=16)
    with pytest.raises(HuggingFaceCheckpointError, match="apply_residual_post_layernorm=False") as err:
        export_to_huggingface(pre_ln, tmp_path)
    one_line(err)
    with pytest.raises(HuggingFaceCheckpointError, match="contains no BertModel, GPTModel or LlamaModel"):
        export_to_huggingface(torch.nn.Linear(2, 2), tmp_path)
    assert not os.listdir(tmp_path)
