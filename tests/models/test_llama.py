"""Llama: RoPE, SwiGLU and grouped-query attention against reference formulas; a random
Hugging Face LlamaForCausalLM (GQA) gives the LiBai model's logits and greedy tokens at tp=1
and tp=2 (also with fewer key/value heads than tp ranks, replicated); export -> transformers; sharded and .bin checkpoints; one-line errors."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from libai.layers import GroupedQueryAttention, KVCache, RotaryEmbedding, SwiGLU
from libai.layers.rotary import rope_inverse_frequencies
from libai.models import LlamaForCausalLM
from libai.models.utils.model_loader import HuggingFaceCheckpointError, export_to_huggingface, load_huggingface_llama
from libai.utils import distributed as dist
from tests.helpers.dist import run_on_ranks

transformers = pytest.importorskip("transformers")

HF_CONFIG = dict(
    vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
)
INPUT_IDS = torch.tensor([[5, 17, 3, 90, 44, 2, 61, 8], [1, 2, 3, 4, 5, 6, 7, 8]])


@pytest.fixture(scope="module", autouse=True)
def one_process_layout():
    dist.setup_dist_util({}, device="cpu")


def random_hf_llama(**overrides):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**HF_CONFIG, **overrides})
    model = transformers.LlamaForCausalLM(config).eval()
    # Random weights everywhere (norms included), so a mix-up of any two tensors shows.
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory):
    model = random_hf_llama()
    folder = tmp_path_factory.mktemp("llama")
    model.save_pretrained(folder)
    return model, str(folder)


# --------------------------------------------------------------------------------------
# Layers against formulas
# --------------------------------------------------------------------------------------


def reference_rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate pair (i, i + d/2) of x [b, h, s, d] by angle position * inv_freq[i], as a complex product."""
    half = x.shape[-1] // 2
    pairs = torch.complex(x[..., :half].double(), x[..., half:].double())
    angles = positions[:, None, :, None].double() * inv_freq.double()
    rotated = pairs * torch.polar(torch.ones_like(angles), angles)
    return torch.cat((rotated.real, rotated.imag), dim=-1).to(x.dtype)


@pytest.mark.parametrize(
    "scaling",
    [None, {"rope_type": "linear", "factor": 4.0},
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 32}],
    ids=["default", "linear", "llama3"],
)
def test_rope_rotates_pairs_by_hugging_face_frequencies(scaling):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    head_size, theta = 16, 500.0
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=64,
                                      rope_parameters={"rope_theta": theta, "rope_type": "default", **(scaling or {})})
    kind = (scaling or {}).get("rope_type", "default")
    expected = ROPE_INIT_FUNCTIONS[kind](config, "cpu")[0] if kind != "default" else 1.0 / theta ** (torch.arange(0, 16, 2).float() / 16)
    inv_freq = rope_inverse_frequencies(head_size, theta, scaling)
    torch.testing.assert_close(inv_freq, expected.float(), rtol=1e-6, atol=0)
    rope = RotaryEmbedding(head_size, theta, scaling)
    q, k = torch.randn(2, 3, 5, head_size), torch.randn(2, 1, 5, head_size)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 9, 11, 30, 63]])
    q_rot, k_rot = rope(q, k, positions)
    torch.testing.assert_close(q_rot, reference_rope(q, positions, inv_freq), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_rot, reference_rope(k, positions, inv_freq), rtol=1e-5, atol=1e-5)


def test_unsupported_rope_scaling_is_named():
    with pytest.raises(ValueError, match="rope_scaling type 'yarn' is not supported: use one of default, linear, llama3"):
        RotaryEmbedding(16, 10000.0, {"rope_type": "yarn", "factor": 2.0})


def test_swiglu_is_down_of_silu_gate_times_up():
    torch.manual_seed(0)
    mlp = SwiGLU(8, 12)
    x = torch.randn(3, 8)
    gate, up, down = (to_plain(m.weight) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    expected = (F.silu(x @ gate.T) * (x @ up.T)) @ down.T
    torch.testing.assert_close(mlp(x), expected, rtol=1e-5, atol=1e-6)


def to_plain(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def reference_gqa(layer: GroupedQueryAttention, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Causal attention with every key/value head repeated for its query heads (float64)."""
    b, s, _ = x.shape
    d, h, kv = layer.head_size, layer.num_heads, layer.num_kv_heads
    x = x.double()
    q = (x @ to_plain(layer.q_proj.weight).double().T).view(b, s, h, d).transpose(1, 2)
    k = (x @ to_plain(layer.k_proj.weight).double().T).view(b, s, kv, d).transpose(1, 2)
    v = (x @ to_plain(layer.v_proj.weight).double().T).view(b, s, kv, d).transpose(1, 2)
    inv_freq = layer.rotary.inv_freq
    q, k = reference_rope(q, positions, inv_freq), reference_rope(k, positions, inv_freq)
    k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    scores = scores.masked_fill(~torch.ones(s, s, dtype=torch.bool).tril(), float("-inf"))
    context = scores.softmax(-1) @ v
    return (context.transpose(1, 2).reshape(b, s, h * d) @ to_plain(layer.o_proj.weight).double().T).float()


def test_grouped_query_attention_matches_repeated_heads_and_its_cache():
    torch.manual_seed(0)
    layer = GroupedQueryAttention(32, 4, 2, rope_theta=100.0)
    x = torch.randn(2, 6, 32)
    positions = torch.arange(6).expand(2, 6)
    torch.testing.assert_close(layer(x), reference_gqa(layer, x, positions), rtol=1e-4, atol=1e-5)
    # Decoding with a cache: the last position's output equals the full pass's.
    cache = KVCache()
    layer(x[:, :5], past_key_value=cache)
    torch.testing.assert_close(layer(x[:, 5:], past_key_value=cache), layer(x)[:, 5:], rtol=1e-5, atol=1e-6)
    assert cache._keys[0].shape[1] == 2  # key/value heads only


# --------------------------------------------------------------------------------------
# Hugging Face Llama
# --------------------------------------------------------------------------------------


def test_logits_and_greedy_tokens_match_transformers(hf_llama):
    hf, folder = hf_llama
    model = load_huggingface_llama(folder, LlamaForCausalLM).eval()
    assert model.model.cfg["num_key_value_heads"] == 2 and model.model.cfg["ffn_hidden_size"] == 48
    with torch.no_grad():
        expected = hf(INPUT_IDS).logits
        got = model(INPUT_IDS)["prediction_scores"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    hf_tokens = hf.generate(INPUT_IDS[:, :4], max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(model.generate(INPUT_IDS[:, :4], max_new_tokens=10), hf_tokens)


def _tp2_logits(folder):
    from libai.utils import distributed as dist

    dist.setup_dist_util({"tensor_parallel_size": 2}, device="cpu")
    model = load_huggingface_llama(folder, LlamaForCausalLM).eval()
    with torch.no_grad():
        logits = model(INPUT_IDS)["prediction_scores"]
    return logits, model.generate(INPUT_IDS[:, :4], max_new_tokens=10)


def test_tp2_gives_the_one_process_logits_and_tokens(hf_llama):
    hf, folder = hf_llama
    with torch.no_grad():
        expected = hf(INPUT_IDS).logits
    hf_tokens = hf.generate(INPUT_IDS[:, :4], max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    for logits, tokens in run_on_ranks(_tp2_logits, 2, folder):
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
        assert torch.equal(tokens, hf_tokens)


def test_export_loads_in_transformers_with_the_same_logits(hf_llama, tmp_path):
    hf, folder = hf_llama
    model = load_huggingface_llama(folder, LlamaForCausalLM).eval()
    export_to_huggingface(model, tmp_path)
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(INPUT_IDS).logits, hf(INPUT_IDS).logits, rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_tied_embeddings_and_rope_scaling_round_trip(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    hf = random_hf_llama(tie_word_embeddings=True, rope_parameters={"rope_theta": 500000.0, **scaling})
    hf.save_pretrained(tmp_path / "hf")
    model = load_huggingface_llama(tmp_path / "hf", LlamaForCausalLM).eval()
    assert model.tie_word_embeddings and model.model.cfg["rope_scaling"]["rope_type"] == "llama3"
    with torch.no_grad():
        torch.testing.assert_close(model(INPUT_IDS)["prediction_scores"], hf(INPUT_IDS).logits, rtol=0, atol=1e-5)
    export_to_huggingface(model, tmp_path / "out")
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(INPUT_IDS).logits, hf(INPUT_IDS).logits, rtol=0, atol=1e-6)


def _parameters(model):
    return {name: to_plain(p).detach().clone() for name, p in model.named_parameters()}


def test_sharded_and_bin_checkpoints_load_the_same_weights(hf_llama, tmp_path):
    hf, folder = hf_llama
    reference = _parameters(load_huggingface_llama(folder, LlamaForCausalLM))
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 2
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "sharded" / "config.json").read_text())
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    for variant in ("sharded", "bin"):
        loaded = _parameters(load_huggingface_llama(tmp_path / variant, LlamaForCausalLM))
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), variant


# --------------------------------------------------------------------------------------
# One-line errors
# --------------------------------------------------------------------------------------


def _one_line(err) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def test_clear_errors(hf_llama, tmp_path):
    hf, folder = hf_llama
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    gpt2.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(HuggingFaceCheckpointError, match="describes a 'gpt2' model .*not Llama") as err:
        load_huggingface_llama(tmp_path / "gpt2", LlamaForCausalLM)
    _one_line(err)

    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    next(iter(sorted((tmp_path / "sharded").glob("model-*.safetensors")))).unlink()
    with pytest.raises(HuggingFaceCheckpointError, match="shard\\(s\\) listed in model.safetensors.index.json are missing") as err:
        load_huggingface_llama(tmp_path / "sharded", LlamaForCausalLM)
    _one_line(err)

    config = json.loads((tmp_path / "gpt2" / "config.json").read_text())
    yarn = {**hf.config.to_dict(), "rope_parameters": {"rope_theta": 10000.0, "rope_type": "yarn", "factor": 2.0}}
    (tmp_path / "yarn").mkdir()
    (tmp_path / "yarn" / "config.json").write_text(json.dumps(yarn))
    (tmp_path / "yarn" / "model.safetensors").write_bytes((tmp_path / "gpt2" / "model.safetensors").read_bytes())
    with pytest.raises(HuggingFaceCheckpointError, match="rope_scaling cannot be used: rope_scaling type 'yarn'") as err:
        load_huggingface_llama(tmp_path / "yarn", LlamaForCausalLM)
    _one_line(err)
    assert config["model_type"] == "gpt2"


def _loss_grads(model) -> tuple[torch.Tensor, dict]:
    """The LM loss on INPUT_IDS and every parameter's full gradient after its backward."""
    loss = model(INPUT_IDS, labels=INPUT_IDS)["lm_loss"].mean()
    loss.backward()
    full = {n: p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad for n, p in model.named_parameters()}
    return loss.detach(), full


def _replicated_kv_heads(folder):
    """Worker (tp=2, one key/value head): logits, greedy tokens, loss and gradients, then the
    error for a head count that neither splits over nor replicates on 2 ranks."""
    from libai.utils import distributed as dist

    dist.setup_dist_util({"tensor_parallel_size": 2}, device="cpu")
    model = load_huggingface_llama(folder, LlamaForCausalLM).eval()
    assert model.model.layers[0].self_attn.replicate_kv
    with torch.no_grad():
        logits = model(INPUT_IDS)["prediction_scores"]
    tokens = model.generate(INPUT_IDS[:, :4], max_new_tokens=10)
    loss, grads = _loss_grads(model)
    try:
        GroupedQueryAttention(36, 6, num_key_value_heads=3)
    except ValueError as err:
        return logits, tokens, loss, grads, str(err)
    return logits, tokens, loss, grads, None


def test_key_value_heads_fewer_than_tp_ranks_are_replicated(tmp_path):
    hf = random_hf_llama(num_key_value_heads=1)
    hf.save_pretrained(tmp_path)
    one = load_huggingface_llama(str(tmp_path), LlamaForCausalLM).eval()
    loss, grads = _loss_grads(one)
    with torch.no_grad():
        expected = hf(INPUT_IDS).logits
    hf_tokens = hf.generate(INPUT_IDS[:, :4], max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    for logits, tokens, tp_loss, tp_grads, error in run_on_ranks(_replicated_kv_heads, 2, str(tmp_path)):
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
        assert torch.equal(tokens, hf_tokens)
        torch.testing.assert_close(tp_loss, loss, rtol=0, atol=1e-6)
        assert tp_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(tp_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
        assert "num_key_value_heads=3 cannot be split over 2 tensor-parallel ranks nor replicated" in error
        assert "\n" not in error
