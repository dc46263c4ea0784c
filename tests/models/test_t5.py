"""LiBai's T5 (`libai.models.t5_model`): shapes, loss, eval outputs, a plain-PyTorch
reference of the same architecture, incremental decoding, the config, a real T5Dataset
batch, and tp=2 on two gloo processes equal to one process (plus the clear error under
pipeline parallelism, whose encoder output would have to skip stages)."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.dist import run_on_ranks

TINY = dict(
    vocab_size=64,
    hidden_size=16,
    hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=32,
    embedding_dropout_prob=0.1,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=16,
)
B, S_ENC, S_DEC = 3, 10, 6
ENC_LENGTHS, DEC_LENGTHS = (10, 7, 4), (6, 4, 2)
SEED = 1234
TOL = 1e-5
FIELDS = [
    "encoder_input_ids",
    "decoder_input_ids",
    "encoder_attn_mask",
    "decoder_attn_mask",
    "encoder_decoder_attn_mask",
    "lm_labels",
    "loss_mask",
]


def make_batch(seed: int = 0, mask_dtype: torch.dtype = torch.bool) -> dict:
    """A batch laid out as T5Dataset's: padded sequences, padding attends to nothing."""
    gen = torch.Generator().manual_seed(seed)
    enc_valid = torch.arange(S_ENC) < torch.tensor(ENC_LENGTHS)[:, None]
    dec_valid = torch.arange(S_DEC) < torch.tensor(DEC_LENGTHS)[:, None]
    causal = torch.ones(S_DEC, S_DEC, dtype=torch.bool).tril()
    masks = dict(
        encoder_attn_mask=enc_valid[:, :, None] & enc_valid[:, None, :],
        decoder_attn_mask=causal & dec_valid[:, :, None] & dec_valid[:, None, :],
        encoder_decoder_attn_mask=dec_valid[:, :, None] & enc_valid[:, None, :],
    )
    return dict(
        encoder_input_ids=torch.randint(0, TINY["vocab_size"], (B, S_ENC), generator=gen),
        decoder_input_ids=torch.randint(0, TINY["vocab_size"], (B, S_DEC), generator=gen),
        **{k: v.to(mask_dtype) for k, v in masks.items()},
        lm_labels=torch.randint(0, TINY["vocab_size"], (B, S_DEC), generator=gen),
        loss_mask=dec_valid.float(),
    )


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) DTensor parameter or gradient."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def build(cfg: dict = TINY, seed: int = SEED):
    from libai.models.t5_model import T5ForPreTraining

    torch.manual_seed(seed)
    return T5ForPreTraining(cfg)


# --------------------------------------------------------------------------------------
# A plain-PyTorch T5 of the same architecture (nothing from libai)
# --------------------------------------------------------------------------------------


class RefAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections; fully masked rows give zeros."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(hidden, hidden) for _ in range(4))

    def forward(self, x, memory, keep):
        b, q_len, hidden = x.shape
        d = hidden // self.heads

        def split(t):
            return t.view(b, -1, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(memory)), split(self.v(memory))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        probs = torch.softmax(scores.masked_fill(~keep[:, None], float("-inf")), dim=-1).nan_to_num(0.0)
        return self.out((probs @ v).transpose(1, 2).reshape(b, q_len, hidden))


class RefLayer(nn.Module):
    """Pre-LN block: self attention, [cross attention], GELU MLP, each residual."""

    def __init__(self, hidden: int, ffn: int, heads: int, eps: float, decoder: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.ln_self, self.ln_mlp = nn.LayerNorm(hidden, eps=eps), nn.LayerNorm(hidden, eps=eps)
        self.self_attn = RefAttention(hidden, heads)
        if decoder:
            self.ln_cross = nn.LayerNorm(hidden, eps=eps)
            self.cross_attn = RefAttention(hidden, heads)
        self.fc1, self.fc2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def forward(self, x, keep, memory=None, memory_keep=None):
        h = self.ln_self(x)
        x = x + self.self_attn(h, h, keep)
        if self.decoder:
            x = x + self.cross_attn(self.ln_cross(x), memory, memory_keep)
        return x + self.fc2(F.gelu(self.fc1(self.ln_mlp(x))))


class RefT5(nn.Module):
    """Shared word + position embeddings, encoder and decoder stacks with final norms, tied head."""

    def __init__(self, vocab, hidden, layers, heads, ffn, positions, eps) -> None:
        super().__init__()
        self.words, self.positions = nn.Embedding(vocab, hidden), nn.Embedding(positions, hidden)
        self.encoder = nn.ModuleList(RefLayer(hidden, ffn, heads, eps, False) for _ in range(layers))
        self.decoder = nn.ModuleList(RefLayer(hidden, ffn, heads, eps, True) for _ in range(layers))
        self.enc_norm, self.dec_norm = nn.LayerNorm(hidden, eps=eps), nn.LayerNorm(hidden, eps=eps)
        self.head_bias = nn.Parameter(torch.zeros(vocab))

    def embed(self, ids):
        return self.words(ids) + self.positions(torch.arange(ids.shape[1]))

    def forward(self, enc_ids, dec_ids, enc_keep, dec_keep, cross_keep):
        memory = self.embed(enc_ids)
        for layer in self.encoder:
            memory = layer(memory, enc_keep)
        memory = self.enc_norm(memory)
        causal = torch.ones(dec_ids.shape[1], dec_ids.shape[1], dtype=torch.bool).tril()
        x = self.embed(dec_ids)
        for layer in self.decoder:
            x = layer(x, dec_keep & causal, memory, cross_keep)
        return self.dec_norm(x) @ self.words.weight.T + self.head_bias


def _copy_attention(ref: RefAttention, attn, heads: int) -> None:
    """LiBai fuses the projections with output rows laid out [heads, parts, head_size]."""
    if attn.is_cross_attention:
        ref.q.weight.copy_(_full(attn.query.weight))
        ref.q.bias.copy_(_full(attn.query.bias))
        fused_w, fused_b, targets = attn.key_value.weight, attn.key_value.bias, (ref.k, ref.v)
    else:
        fused_w, fused_b, targets = attn.query_key_value.weight, attn.query_key_value.bias, (ref.q, ref.k, ref.v)
    weight = _full(fused_w).view(heads, len(targets), -1, fused_w.shape[-1])
    bias = _full(fused_b).view(heads, len(targets), -1)
    for part, linear in enumerate(targets):
        linear.weight.copy_(weight[:, part].reshape(linear.weight.shape))
        linear.bias.copy_(bias[:, part].reshape(-1))
    ref.out.weight.copy_(_full(attn.dense.weight))
    ref.out.bias.copy_(_full(attn.dense.bias))


def _copy_norm(ref: nn.LayerNorm, norm) -> None:
    ref.weight.copy_(_full(norm.weight))
    ref.bias.copy_(_full(norm.bias))


def _copy_layer(ref: RefLayer, layer, heads: int) -> None:
    _copy_norm(ref.ln_self, layer.input_layernorm)
    _copy_attention(ref.self_attn, layer.self_attention, heads)
    _copy_norm(ref.ln_mlp, layer.post_cross_attention_layernorm if ref.decoder else layer.post_attention_layernorm)
    if ref.decoder:
        _copy_norm(ref.ln_cross, layer.post_attention_layernorm)
        _copy_attention(ref.cross_attn, layer.cross_attention, heads)
    for fc, linear in ((ref.fc1, layer.mlp.dense_h_to_4h), (ref.fc2, layer.mlp.dense_4h_to_h)):
        fc.weight.copy_(_full(linear.weight))
        fc.bias.copy_(_full(linear.bias))


@torch.no_grad()
def reference_of(t5_model, cfg: dict) -> RefT5:
    """A RefT5 holding the weights of a libai `T5Model`."""
    ref = RefT5(
        cfg["vocab_size"],
        cfg["hidden_size"],
        cfg["hidden_layers"],
        cfg["num_attention_heads"],
        cfg["intermediate_size"],
        cfg["max_position_embeddings"],
        t5_model.encoder.final_layernorm.eps,
    )
    ref.words.weight.copy_(_full(t5_model.embedding.word_embeddings.weight))
    ref.positions.weight.copy_(_full(t5_model.embedding.position_embeddings.weight))
    for refs, layers in ((ref.encoder, t5_model.encoder.layers), (ref.decoder, t5_model.decoder.layers)):
        for ref_layer, layer in zip(refs, layers):
            _copy_layer(ref_layer, layer, cfg["num_attention_heads"])
    _copy_norm(ref.enc_norm, t5_model.encoder.final_layernorm)
    _copy_norm(ref.dec_norm, t5_model.decoder.final_layernorm)
    ref.head_bias.copy_(_full(t5_model.lm_head.bias))
    return ref.eval()


# --------------------------------------------------------------------------------------
# One process
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process():
    from libai.utils import distributed as dist

    dist.setup_dist_util({}, device="cpu")


def _inputs(batch: dict) -> list:
    return [batch[k] for k in FIELDS[:5]]


def test_shapes_names_and_layer_indices(one_process):
    model = build()
    batch = make_batch()
    logits = model.t5_model(*_inputs(batch))
    assert logits.shape == (B, S_DEC, TINY["vocab_size"])
    t5 = model.t5_model
    assert [layer.layer_idx for layer in t5.encoder.layers] == [0, 1]
    assert [layer.layer_idx for layer in t5.decoder.layers] == [2, 3]
    assert (t5.encoder.final_layernorm.layer_idx, t5.decoder.final_layernorm.layer_idx) == (1, -1)
    assert t5.embedding.word_embeddings.layer_idx == t5.embedding.position_embeddings.layer_idx == 0
    names = dict(model.named_parameters())
    assert "t5_model.embedding.word_embeddings.weight" in names and "t5_model.lm_head.bias" in names
    assert "t5_model.decoder.layers.1.cross_attention.key_value.weight" in names
    # Input and output embeddings are one tensor; the head adds only its bias.
    assert not any(name.startswith("t5_model.lm_head.") and name != "t5_model.lm_head.bias" for name in names)
    assert list(inspect.signature(model.forward).parameters)[:7] == FIELDS


def test_training_loss_is_the_masked_mean_and_backward_reaches_every_parameter(one_process):
    model = build().train()
    batch = make_batch()
    torch.manual_seed(0)
    loss = model(**batch)["masked_lm_loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(_full(p.grad)).all()]
    assert not missing

    # Same dropout draws: the loss is sum(token loss * mask) / sum(mask) of the logits.
    torch.manual_seed(0)
    logits = model.t5_model(*_inputs(batch))
    token_loss = F.cross_entropy(logits.flatten(0, 1), batch["lm_labels"].flatten(), reduction="none")
    mask = batch["loss_mask"].flatten()
    assert torch.allclose(loss, (token_loss * mask).sum() / mask.sum(), atol=TOL)


def test_eval_outputs(one_process):
    from libai.evaluation import PPLEvaluator

    model = build().eval()
    batch = make_batch()
    with torch.no_grad():
        scores = model(*_inputs(batch))
        losses = model(**batch)
        unmasked = model(*_inputs(batch), lm_labels=batch["lm_labels"])
    assert list(scores) == ["prediction_scores"] and scores["prediction_scores"].shape == (B, S_DEC, 64)
    token_loss = losses["masked_lm_loss"]
    assert list(losses) == ["masked_lm_loss"] and token_loss.shape == (B, S_DEC)
    assert torch.equal(token_loss == 0, batch["loss_mask"] == 0)
    assert torch.allclose(unmasked["masked_lm_loss"] * batch["loss_mask"], token_loss)

    evaluator = PPLEvaluator()
    evaluator.process(batch, losses)
    expected = math.exp(float(token_loss.sum() / batch["loss_mask"].sum()))
    assert evaluator.evaluate()["PPL"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.long])
def test_logits_equal_a_plain_pytorch_t5(one_process, mask_dtype):
    model = build().eval()
    ref = reference_of(model.t5_model, TINY)
    batch = make_batch(seed=3, mask_dtype=mask_dtype)
    with torch.no_grad():
        logits = model.t5_model(*_inputs(batch))
        masks = [batch[k].bool() for k in FIELDS[2:5]]
        expected = ref(batch["encoder_input_ids"], batch["decoder_input_ids"], *masks)
    assert (logits - expected).abs().max() < TOL


def test_incremental_decoding_with_cache_equals_full_decoding(one_process):
    model = build().eval()
    batch = make_batch(seed=5)
    enc_ids, dec_ids = batch["encoder_input_ids"], batch["decoder_input_ids"]
    enc_mask = batch["encoder_attn_mask"]
    cross = batch["encoder_attn_mask"][:, :1].expand(B, 1, S_ENC)  # real encoder tokens
    with torch.no_grad():
        full = model.t5_model(enc_ids, dec_ids, enc_mask, None, cross.expand(B, S_DEC, S_ENC))
        steps = []
        for t in range(S_DEC):
            # Past + new keys: all visible (the decoder's causal mask does the rest).
            self_mask = torch.ones(B, 1, t + 1, dtype=torch.bool)
            steps.append(model.t5_model(enc_ids, dec_ids[:, t : t + 1], enc_mask, self_mask, cross, use_cache=True))
        assert model.t5_model.past_length == S_DEC
        model.t5_model(enc_ids, dec_ids, enc_mask, None, None)  # no cache: clears it
    assert model.t5_model.past_length == 0 and model.t5_model.encoder_states is None
    assert (torch.cat(steps, dim=1) - full).abs().max() < TOL


def test_clear_errors(one_process):
    model = build().eval()
    batch = make_batch()
    too_long = torch.zeros(1, TINY["max_position_embeddings"] + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="reaches position 17 but max_position_embeddings is 16"):
        model(too_long, batch["decoder_input_ids"][:1], None, None, None)
    with pytest.raises(ValueError, match=r"encoder_attn_mask must be \[batch, query, key\]"):
        model(*_inputs(dict(batch, encoder_attn_mask=torch.ones(B, S_ENC))))
    with pytest.raises(ValueError, match=r"loss_mask \(3, 5\) must have the shape of lm_labels \(3, 6\)"):
        model(**dict(batch, loss_mask=batch["loss_mask"][:, :5]))


def test_config_loads_and_builds(one_process):
    from libai.config import LazyConfig, get_config, instantiate
    from libai.models.t5_model import T5ForPreTraining, T5Model

    cfg = get_config("common/models/t5.py")
    defaults = cfg.model.cfg
    sizes = ("vocab_size", "hidden_size", "hidden_layers", "num_attention_heads", "intermediate_size")
    assert [defaults[k] for k in sizes] == [30522, 768, 6, 16, 1536] and defaults.max_position_embeddings == 512
    dropouts = ("embedding_dropout_prob", "hidden_dropout_prob", "attention_probs_dropout_prob")
    assert [defaults[k] for k in dropouts] == [0.1, 0.1, 0.1]
    assert set(defaults) >= set(inspect.signature(inspect.unwrap(T5Model.__init__)).parameters) - {"self"}
    cfg = LazyConfig.apply_overrides(cfg, [f"model.cfg.{k}={v}" for k, v in TINY.items()])
    torch.manual_seed(SEED)
    model = instantiate(cfg.model)
    assert isinstance(model, T5ForPreTraining)
    # Built from the config, it is the same model as built from the dict.
    expected = build()
    for (name, p), q in zip(model.named_parameters(), expected.parameters()):
        assert torch.equal(_full(p), _full(q)), name


def _write_indexed(prefix: str, docs: list[list[np.ndarray]]):
    from libai.data.indexed import MMapIndexedDataset, MMapIndexedDatasetBuilder

    builder = MMapIndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for doc in docs:
        for sentence in doc:
            builder.add_item(sentence)
        builder.end_document()
    builder.finalize(f"{prefix}.idx")
    return MMapIndexedDataset(prefix)


def test_a_t5dataset_batch_trains_and_evaluates(one_process, tmp_path):
    from libai.data import Instance
    from libai.data.datasets import T5Dataset
    from libai.evaluation import PPLEvaluator
    from libai.tokenizer import BertTokenizer, bert_vocab_file

    tokenizer = BertTokenizer(
        bert_vocab_file(),
        bos_token="[BOS]",
        eos_token="[EOS]",
        additional_special_tokens=[f"<extra_id_{i}>" for i in range(100)],
    )
    rng = np.random.default_rng(0)
    docs = [[rng.integers(1000, 2000, rng.integers(5, 15)) for _ in range(3)] for _ in range(8)]
    dataset = T5Dataset(
        tokenizer=tokenizer,
        indexed_dataset=_write_indexed(str(tmp_path / "t5"), docs),
        max_seq_length=24,
        max_seq_length_dec=12,
    )
    batch = Instance.stack([dataset[i] for i in range(4)])
    # As DefaultTrainer.get_batch: field name -> tensor.
    inputs = {key: value.tensor for key, value in batch.get_fields().items()}
    assert list(inputs) == FIELDS

    # The vocabulary rounded up to a multiple of 128, as make_vocab_size_divisible_by does.
    vocab_size = -(-len(tokenizer) // 128) * 128
    model = build(dict(TINY, vocab_size=vocab_size, max_position_embeddings=24)).train()
    loss = model(**inputs)["masked_lm_loss"]
    loss.backward()
    # A fresh model predicts about uniformly: a loss near log(vocab_size).
    assert 0.5 * math.log(vocab_size) < loss.item() < 2 * math.log(vocab_size)
    assert torch.isfinite(_full(model.t5_model.embedding.word_embeddings.weight.grad)).all()

    model.eval()
    evaluator = PPLEvaluator()
    with torch.no_grad():
        evaluator.process(inputs, model(**inputs))
    ppl = evaluator.evaluate()["PPL"]
    assert math.isfinite(ppl) and ppl > 1.0


# --------------------------------------------------------------------------------------
# tp = 2 and pp = 2 on two gloo processes
# --------------------------------------------------------------------------------------


def train_step_snapshot() -> dict:
    """Loss, full parameters and full gradients of one seeded training step (with dropout)."""
    model = build().train()
    torch.manual_seed(SEED + 1)
    loss = model(**make_batch())["masked_lm_loss"]
    loss.backward()
    return dict(
        loss=loss.item(),
        params={n: _full(p).detach().numpy() for n, p in model.named_parameters()},
        grads={n: _full(p.grad).numpy() for n, p in model.named_parameters()},
    )


def _worker() -> dict:
    from libai.utils import distributed as dist

    dist.setup_dist_util({"tensor_parallel_size": 2}, device="cpu")
    return train_step_snapshot()


@pytest.fixture(scope="module")
def two_ranks():
    # One spawn for the module: every distributed check runs inside the workers.
    return run_on_ranks(_worker, 2)


def test_tp2_equals_one_process(one_process, two_ranks):
    expected = train_step_snapshot()
    for rank, result in enumerate(two_ranks):
        assert abs(result["loss"] - expected["loss"]) < TOL, f"rank {rank}"
        for kind in ("params", "grads"):
            assert result[kind].keys() == expected[kind].keys()
            errors = {n: float(np.abs(result[kind][n] - v).max()) for n, v in expected[kind].items()}
            bad = {n: e for n, e in errors.items() if not e < TOL}
            assert not bad, f"rank {rank} {kind}: {bad}"


# T5 under pipeline parallelism (the decoder embeddings travel with the encoder output to
# the decoder's stage) is tested against one process in tests/test_model_zoo_layouts.py.
