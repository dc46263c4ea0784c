"""libai.layers against plain torch.nn references, on one process (tp = 1).

`run_layer_checks` is the whole battery: every layer's output, input gradients and (gathered)
parameter gradients against a torch.nn reference built from the same full weights. It runs
here in-process, and on spawned ranks (tp = 2, tp = 4, dp2 x tp2) from the sibling modules,
which import it. Workers return plain Python numbers only.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

from libai.layers.utils import to_local
from libai.models.utils.model_loader.base_loader import assign_full_tensor
from libai.utils import distributed as dist
from tests.helpers.dist import run_on_ranks

B, S, K, H, HEADS, FFN, V = 4, 5, 3, 16, 4, 32, 8
TOL = 1e-5


# --------------------------------------------------------------------------------------
# References: plain PyTorch, parameter names as in libai.layers
# --------------------------------------------------------------------------------------


class RefAttention(nn.Module):
    """Attention written from the layout's definition: QKV columns are [heads, 3, head_size]."""

    def __init__(self, cross: bool = False, causal: bool = False, dropout: float = 0.0):
        super().__init__()
        self.cross, self.causal, self.p = cross, causal, dropout
        if cross:
            self.query, self.key_value = nn.Linear(H, H), nn.Linear(H, 2 * H)
        else:
            self.query_key_value = nn.Linear(H, 3 * H)
        self.dense = nn.Linear(H, H)

    def forward(self, x, enc=None, mask=None):
        b, q, hs = x.shape[0], x.shape[1], H // HEADS
        if self.cross:
            qh = self.query(x).view(b, q, HEADS, hs)
            kv = self.key_value(enc).view(b, enc.shape[1], HEADS, 2, hs)
            kh, vh = kv[:, :, :, 0], kv[:, :, :, 1]
        else:
            qh, kh, vh = self.query_key_value(x).view(b, q, HEADS, 3, hs).unbind(3)
        qh, kh, vh = (t.transpose(1, 2) for t in (qh, kh, vh))
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(hs)
        keep = torch.ones(scores.shape, dtype=torch.bool)
        if mask is not None:
            keep = keep & mask.bool()
        if self.causal:
            keep = keep & torch.ones(q, kh.shape[2], dtype=torch.bool).tril(kh.shape[2] - q)
        probs = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
        if self.p > 0:
            probs = probs * (torch.rand(probs.shape) >= self.p) / (1 - self.p)
        return self.dense((probs @ vh).transpose(1, 2).reshape(b, q, H))


class RefMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense_h_to_4h, self.dense_4h_to_h = nn.Linear(H, FFN), nn.Linear(FFN, H)

    def forward(self, x):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))


class RefTransformerLayer(nn.Module):
    def __init__(self, decoder=False, causal=False, post_ln=False, residual_post_ln=False):
        super().__init__()
        self.decoder, self.post_ln, self.residual_post_ln = decoder, post_ln, residual_post_ln
        if not post_ln:
            self.input_layernorm = nn.LayerNorm(H)
        self.self_attention = RefAttention(causal=causal)
        self.post_attention_layernorm = nn.LayerNorm(H)
        if decoder:
            self.cross_attention = RefAttention(cross=True)
            self.post_cross_attention_layernorm = nn.LayerNorm(H)
        self.mlp = RefMLP()
        if post_ln:
            self.output_layernorm = nn.LayerNorm(H)

    def forward(self, x, mask=None, enc=None, enc_mask=None):
        if self.post_ln:
            x = self.post_attention_layernorm(x + self.self_attention(x, mask=mask))
            if self.decoder:
                x = self.post_cross_attention_layernorm(x + self.cross_attention(x, enc, enc_mask))
            return self.output_layernorm(x + self.mlp(x))
        res = (lambda normed, h: normed) if self.residual_post_ln else (lambda normed, h: h)
        n = self.input_layernorm(x)
        x = res(n, x) + self.self_attention(n, mask=mask)
        n = self.post_attention_layernorm(x)
        if self.decoder:
            x = res(n, x) + self.cross_attention(n, enc, enc_mask)
            n = self.post_cross_attention_layernorm(x)
        return res(n, x) + self.mlp(n)


# --------------------------------------------------------------------------------------
# Helpers: this rank's part of full tensors, gathered gradients
# --------------------------------------------------------------------------------------


class _Layout:
    def __init__(self):
        self.tp, self.tp_rank = dist.get_tensor_parallel_size(), dist.get_tensor_parallel_rank()
        self.dp, self.dp_rank = dist.get_data_parallel_size(), dist.get_data_parallel_rank()

    def batch(self, t):
        """This data-parallel rank's share of the batch (dim 0)."""
        return t.chunk(self.dp, 0)[self.dp_rank]

    def split(self, t, dim=-1):
        """This tensor-parallel rank's slice of `dim`."""
        return t.chunk(self.tp, dim)[self.tp_rank]

    def sum_dp(self, t):
        if self.dp > 1:
            torch.distributed.all_reduce(t, group=dist.get_data_parallel_group())
        return t


def _data(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _full(t):
    return t.full_tensor() if isinstance(t, DTensor) else t


def _err(a, b) -> float:
    """Max absolute difference, relative to the reference's scale when that exceeds 1."""
    a, b = a.detach(), b.detach()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


@torch.no_grad()
def _perturb(layer: nn.Module) -> None:
    """Move biases and norm weights (1-D, zeros or ones at start) off their trivial values,
    by the same amounts on every layout."""
    for p in layer.parameters():
        if p.dim() == 1:
            full = _full(p) + 0.1 * _data(*p.shape, seed=p.numel())
            assign_full_tensor(p, full, "perturbed")


def _load(ref: nn.Module, layer: nn.Module) -> nn.Module:
    """Perturb the layer's 1-D parameters, then give `ref` its full weights."""
    _perturb(layer)
    ref.load_state_dict({k: _full(v).detach().clone() for k, v in layer.state_dict().items()})
    return ref


def _compare(lay, name, layer, ref, layer_inputs, ref_inputs, leaves=(), out_split=False, **kw):
    """Forward + backward both, with the same upstream gradient; record the max errors.

    `layer_inputs` are this rank's inputs, `ref_inputs` the full ones; `leaves` lists
    (local leaf, full leaf, part) whose gradients are compared as `part(full grad)`.
    """
    errors = {}
    ref_out = ref(*ref_inputs, **kw.get("ref_kw", {}))
    upstream = _data(*ref_out.shape, seed=99)
    (ref_out * upstream).sum().backward()

    def part(t):
        t = lay.batch(t)
        return lay.split(t) if out_split else t

    out = layer(*layer_inputs, **kw.get("layer_kw", {}))
    (out * part(upstream)).sum().backward()
    errors[f"{name}.out"] = _err(out, part(ref_out))
    for i, (local, full, part_fn) in enumerate(leaves):
        errors[f"{name}.input_grad{i}"] = _err(local.grad, part_fn(full.grad))
    for pname, p in layer.named_parameters():
        grad = lay.sum_dp(_full(p.grad).clone())
        errors[f"{name}.{pname}.grad"] = _err(grad, ref.get_parameter(pname).grad)
    return errors


def _leaf_pair(full, part):
    return part(full).detach().clone().requires_grad_(), full.detach().clone().requires_grad_()


# --------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------


class RefConv1D(nn.Module):
    """GPT-2's Conv1D in plain torch: `x @ weight + bias`, weight (in, out)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


def _check_linear(lay):
    from libai.layers import Conv1D, Linear

    errors = {}
    x = _data(B, S, H, seed=1)
    for cls, ref_cls, mode in [(c, r, m) for c, r in ((Linear, nn.Linear), (Conv1D, RefConv1D)) for m in ("data", "col", "row")]:
        torch.manual_seed(1)
        layer = cls(H, FFN, parallel=mode)
        ref = _load(ref_cls(H, FFN), layer)
        in_part = (lambda t: lay.split(lay.batch(t))) if mode == "row" else lay.batch
        loc, full = _leaf_pair(x, in_part)
        leaves = [(loc, full, in_part)]
        errors.update(_compare(lay, f"{cls.__name__}_{mode}", layer, ref, [loc], [full], leaves, out_split=mode == "col"))
    # A whole input to a row-parallel layer is split by the layer itself.
    torch.manual_seed(1)
    layer = Linear(H, FFN, parallel="row")
    ref = _load(nn.Linear(H, FFN), layer)
    loc, full = _leaf_pair(x, lay.batch)
    errors.update(_compare(lay, "linear_row_whole_input", layer, ref, [loc], [full], [(loc, full, lay.batch)]))
    # skip_bias_add returns the bias for the caller to add.
    out, bias = Linear(H, FFN, parallel="col", skip_bias_add=True)(lay.batch(x))
    errors["linear_skip_bias_add.shapes"] = float(out.shape[-1] != FFN // lay.tp or bias.shape[0] != FFN // lay.tp)
    return errors


def _check_embeddings_and_norms(lay):
    from libai.layers import Embedding, LayerNorm, RMSLayerNorm, VocabEmbedding

    errors = {}
    ids = torch.randint(0, V, (B, S), generator=torch.Generator().manual_seed(3))
    for cls in (VocabEmbedding, Embedding):
        torch.manual_seed(2)
        layer = cls(V, H)
        ref = _load(nn.Embedding(V, H), layer)
        errors.update(_compare(lay, cls.__name__, layer, ref, [lay.batch(ids)], [ids]))
    # padding_idx: the row starts at zero and gets no gradient, as in torch.
    torch.manual_seed(2)
    layer = VocabEmbedding(V, H, padding_idx=V - 1)
    ref = _load(nn.Embedding(V, H, padding_idx=V - 1), layer)
    errors["vocab_padding_row_zero"] = _full(layer.weight)[V - 1].abs().max().item()
    errors.update(_compare(lay, "VocabEmbedding_padding", layer, ref, [lay.batch(ids)], [ids]))

    x = _data(B, S, H, seed=4)
    torch.manual_seed(3)
    layer = LayerNorm(H, eps=1e-6)
    ref = _load(nn.LayerNorm(H, eps=1e-6), layer)
    loc, full = _leaf_pair(x, lay.batch)
    errors.update(_compare(lay, "layernorm", layer, ref, [loc], [full], [(loc, full, lay.batch)]))

    layer = RMSLayerNorm(H)
    ref = _load(nn.RMSNorm(H, eps=1e-6), layer)
    loc, full = _leaf_pair(x, lay.batch)
    errors.update(_compare(lay, "rmsnorm", layer, ref, [loc], [full], [(loc, full, lay.batch)]))
    return errors


def _padding_mask(q_len):
    """LiBai's convention, 1 = keep: [B, 1, q, K] with some keys of each sample masked."""
    keep = torch.ones(B, 1, q_len, S)
    for b in range(B):
        keep[b, :, :, S - 1 - b % 3 :] = 0.0  # the last 1..3 keys
    return keep


def _check_mlp_attention(lay):
    from libai.layers import MLP, AttnMaskType, MultiheadAttention

    errors = {}
    x = _data(B, S, H, seed=5)
    enc = _data(B, K, H, seed=6)

    torch.manual_seed(4)
    layer = MLP(H, FFN)
    loc, full = _leaf_pair(x, lay.batch)
    errors.update(_compare(lay, "mlp", layer, _load(RefMLP(), layer), [loc], [full], [(loc, full, lay.batch)]))

    key_mask = _padding_mask(1)  # [B, 1, 1, S]
    full_mask = _padding_mask(S) * torch.ones(S, S).tril()  # [B, 1, S, S]
    cases = {
        "attn_nomask": (AttnMaskType.padding, None),
        "attn_keymask": (AttnMaskType.padding, key_mask),
        "attn_qkmask": (AttnMaskType.padding, full_mask),
        "attn_causal": (AttnMaskType.causal, None),
        "attn_causal_keymask": (AttnMaskType.causal, key_mask),
    }
    for name, (mask_type, mask) in cases.items():
        torch.manual_seed(5)
        layer = MultiheadAttention(H, HEADS, attn_mask_type=mask_type)
        ref = _load(RefAttention(causal=mask_type == AttnMaskType.causal), layer)
        loc, full = _leaf_pair(x, lay.batch)
        kw = dict(layer_kw={"attention_mask": None if mask is None else lay.batch(mask)}, ref_kw={"mask": mask})
        errors.update(_compare(lay, name, layer, ref, [loc], [full], [(loc, full, lay.batch)], **kw))
    errors["qkv_whole_heads"] = _qkv_layout_error(lay, layer)

    torch.manual_seed(6)
    layer = MultiheadAttention(H, HEADS, is_cross_attention=True)
    ref = _load(RefAttention(cross=True), layer)
    loc, full = _leaf_pair(x, lay.batch)
    eloc, efull = _leaf_pair(enc, lay.batch)
    enc_mask = key_mask[:, :, :, :K]
    kw = dict(layer_kw={"attention_mask": lay.batch(enc_mask)}, ref_kw={"mask": enc_mask})
    leaves = [(loc, full, lay.batch), (eloc, efull, lay.batch)]
    errors.update(_compare(lay, "cross_attn", layer, ref, [loc, eloc], [full, efull], leaves, **kw))

    errors.update(_check_attention_extras(lay, x))
    return errors


def _qkv_layout_error(lay, layer) -> float:
    """This rank's QKV rows are exactly the rows of its whole heads in [heads, 3, head_size]."""
    full = _full(layer.query_key_value.weight).view(HEADS, 3, H // HEADS, H)
    mine = full[lay.tp_rank * HEADS // lay.tp : (lay.tp_rank + 1) * HEADS // lay.tp].reshape(-1, H)
    return _err(to_local(layer.query_key_value.weight), mine)


def _check_attention_extras(lay, x):
    """Incremental decoding with the cache, attention dropout, and no RNG drawn at p = 0."""
    from libai.layers import AttnMaskType, MultiheadAttention

    errors = {}
    torch.manual_seed(7)
    layer = MultiheadAttention(H, HEADS, attn_mask_type=AttnMaskType.causal).eval()
    xb = lay.batch(x)
    with torch.no_grad():
        whole = layer(xb)
        head, cache = layer(xb[:, : S - 1], use_cache=True)
        step, _ = layer(xb[:, S - 1 :], past_key_value=cache, use_cache=True)
    errors["kv_cache"] = max(_err(head, whole[:, : S - 1]), _err(step, whole[:, S - 1 :]))

    if lay.dp == 1:
        # Attention dropout equals one process's under tensor parallelism (each rank draws
        # for all heads and keeps its own); data-parallel ranks draw for their own samples.
        torch.manual_seed(8)
        layer = MultiheadAttention(H, HEADS, attention_dropout_prob=0.3)
        ref = _load(RefAttention(dropout=0.3), layer)
        torch.manual_seed(9)
        ref_out = ref(x)
        torch.manual_seed(9)
        errors["attn_dropout"] = _err(layer(xb), ref_out)

    layer = MultiheadAttention(H, HEADS, output_dropout_prob=0.0).train()
    state = torch.get_rng_state()
    layer(xb)
    errors["no_rng_at_p0"] = float(not torch.equal(state, torch.get_rng_state()))
    return errors


def _check_transformer_layers(lay):
    from libai.layers import AttnMaskType, TransformerLayer

    errors = {}
    x = _data(B, S, H, seed=7)
    enc = _data(B, K, H, seed=8)
    key_mask = _padding_mask(1)
    enc_mask = key_mask[:, :, :, :K]
    cases = {
        "tl_pre_ln": (dict(), dict(), key_mask),
        "tl_post_ln": (dict(post_layernorm=True), dict(post_ln=True), key_mask),
        "tl_residual_post_ln": (dict(apply_residual_post_layernorm=True), dict(residual_post_ln=True), key_mask),
        "tl_causal": (dict(attn_mask_type=AttnMaskType.causal), dict(causal=True), None),
        "tl_decoder": (
            dict(is_decoder=True, attn_mask_type=AttnMaskType.causal),
            dict(decoder=True, causal=True),
            None,
        ),
        "tl_decoder_post_ln": (dict(is_decoder=True, post_layernorm=True), dict(decoder=True, post_ln=True), key_mask),
    }
    for name, (layer_kw, ref_kw, mask) in cases.items():
        torch.manual_seed(10)
        layer = TransformerLayer(H, FFN, HEADS, **layer_kw)
        ref = _load(RefTransformerLayer(**ref_kw), layer)
        loc, full = _leaf_pair(x, lay.batch)
        leaves = [(loc, full, lay.batch)]
        lkw = {"attention_mask": None if mask is None else lay.batch(mask)}
        rkw = {"mask": mask}
        if ref_kw.get("decoder"):
            eloc, efull = _leaf_pair(enc, lay.batch)
            leaves.append((eloc, efull, lay.batch))
            lkw.update(encoder_states=eloc, encoder_attention_mask=lay.batch(enc_mask))
            rkw.update(enc=efull, enc_mask=enc_mask)
        errors.update(_compare(lay, name, layer, ref, [loc], [full], leaves, layer_kw=lkw, ref_kw=rkw))
    return errors


def _check_lm_head_and_loss(lay):
    """VocabEmbedding -> LMLogits (tied weight) -> ParallelCrossEntropyLoss with -1 targets."""
    from libai.layers import LMLogits, ParallelCrossEntropyLoss, VocabEmbedding

    errors = {}
    ids = torch.randint(0, V, (B, S), generator=torch.Generator().manual_seed(11))
    target = torch.randint(0, V, (B, S), generator=torch.Generator().manual_seed(12))
    target[:, -1] = -1  # padding targets: mapped to 0 inside, masked by the model
    loss_mask = (target >= 0).float()

    torch.manual_seed(13)
    emb, head = VocabEmbedding(V, H), LMLogits(V, bias=True)
    _perturb(head)
    ref_weight = _full(emb.weight).detach().clone().requires_grad_()
    ref_bias = _full(head.bias).detach().clone().requires_grad_()

    ref_hidden = torch.tanh(F.embedding(ids, ref_weight))
    ref_logits = F.linear(ref_hidden, ref_weight, ref_bias)
    ref_loss = F.cross_entropy(ref_logits.view(-1, V), target.clamp(min=0).view(-1), reduction="none").view(B, S)
    (ref_loss * loss_mask).sum().backward()

    logits = head(torch.tanh(emb(lay.batch(ids))), emb.weight)
    loss = ParallelCrossEntropyLoss()(logits, lay.batch(target))
    (loss * lay.batch(loss_mask)).sum().backward()
    errors["tied.logits"] = _err(logits, lay.split(lay.batch(ref_logits)))
    errors["tied.loss"] = _err(loss, lay.batch(ref_loss))
    errors["tied.weight_grad"] = _err(lay.sum_dp(_full(emb.weight.grad).clone()), ref_weight.grad)
    errors["tied.bias_grad"] = _err(lay.sum_dp(_full(head.bias.grad).clone()), ref_bias.grad)
    errors["tied.same_parameter"] = float(len(list(emb.parameters())) != 1)

    # The loss alone, on logits with a wide range (the max subtraction matters).
    full_logits = _data(B, S, V, seed=14) * 30
    ref_l = full_logits.clone().requires_grad_()
    ref_loss = F.cross_entropy(ref_l.view(-1, V), target.clamp(min=0).view(-1), reduction="none").view(B, S)
    loc = lay.split(lay.batch(full_logits)).clone().requires_grad_()
    loss = ParallelCrossEntropyLoss()(loc, lay.batch(target))
    upstream = _data(B, S, seed=15)
    (ref_loss * upstream).sum().backward()
    (loss * lay.batch(upstream)).sum().backward()
    errors["ce.loss"] = _err(loss, lay.batch(ref_loss))
    errors["ce.logits_grad"] = _err(loc.grad, lay.split(lay.batch(ref_l.grad)))
    return errors


def _errors_of_bad_sizes(lay) -> list[str]:
    """Messages of the layers' size checks (only raised when tp > 1 does not divide)."""
    from libai.layers import Linear, MultiheadAttention, VocabEmbedding

    messages = []
    for build in (
        lambda: Linear(H, lay.tp + 1, parallel="col"),
        lambda: Linear(lay.tp + 1, H, parallel="row"),
        lambda: MultiheadAttention(H * (lay.tp + 1), lay.tp + 1),
        lambda: VocabEmbedding(lay.tp + 1, H),
        lambda: Linear(H, H, parallel="diagonal"),
    ):
        try:
            build()
            messages.append("")
        except ValueError as exc:
            messages.append(str(exc))
    return messages


def init_snapshot() -> dict[str, list]:
    """Full tensors of every parameter of a seeded model built from all the layers."""
    from libai.layers import Embedding, LMLogits, TransformerLayer, VocabEmbedding

    torch.manual_seed(1234)
    model = nn.ModuleDict(
        dict(
            emb=VocabEmbedding(V, H),
            pos=Embedding(S, H),
            enc=TransformerLayer(H, FFN, HEADS),
            dec=TransformerLayer(H, FFN, HEADS, is_decoder=True, post_layernorm=True),
            head=LMLogits(V, bias=True),
        )
    )
    return {name: _full(p).tolist() for name, p in model.named_parameters()}


def run_layer_checks(cfg_dist: dict, with_snapshot: bool = True) -> dict:
    """All checks under the layout `cfg_dist` (train.dist keys); plain Python results."""
    dist.setup_dist_util(cfg_dist, device="cpu")
    lay = _Layout()
    errors = {}
    checks = (
        _check_linear,
        _check_embeddings_and_norms,
        _check_mlp_attention,
        _check_transformer_layers,
        _check_lm_head_and_loss,
    )
    for check in checks:
        errors.update(check(lay))
    return dict(
        errors=errors,
        bad_sizes=_errors_of_bad_sizes(lay),
        snapshot=init_snapshot() if with_snapshot else None,
    )


def pipeline_snapshot() -> dict[str, list]:
    """Full tensors of two seeded layers on stages 0 and 1 and a head, on one process."""
    from libai.layers import LMLogits, TransformerLayer

    torch.manual_seed(77)
    layers = [TransformerLayer(H, FFN, HEADS, layer_idx=i) for i in (0, 1)]
    head = LMLogits(V, bias=True)
    snapshot = {
        f"layer{i}.{k}": _full(p).tolist() for i, layer in enumerate(layers) for k, p in layer.named_parameters()
    }
    snapshot["head.bias"] = _full(head.bias).tolist()
    return snapshot


def run_pipeline_checks(cfg_dist: dict) -> dict:
    """Under pp = 2: each rank holds shards only of its own stage's layers (empty ones of the
    other stage's), those shards equal the one-process initialisation, and the stage's layer
    computes as the reference does."""
    from libai.layers import LMLogits, TransformerLayer

    dist.setup_dist_util(cfg_dist, device="cpu")
    lay, stage = _Layout(), dist.get_pipeline_parallel_rank()
    torch.manual_seed(77)
    layers = [TransformerLayer(H, FFN, HEADS, layer_idx=i) for i in (0, 1)]
    head = LMLogits(V, bias=True)
    own, other = layers[stage], layers[1 - stage]
    # full_tensor() gathers over the owning stage's tp ranks only, so each stage reads its own.
    snapshot = {f"layer{stage}.{k}": _full(p).tolist() for k, p in own.named_parameters()}
    if stage == 1:
        snapshot["head.bias"] = _full(head.bias).tolist()
    x = _data(B, S, H, seed=21)
    loc, full = _leaf_pair(x, lay.batch)
    ref = _load(RefTransformerLayer(), own)
    errors = _compare(lay, f"stage{stage}_layer", own, ref, [loc], [full], [(loc, full, lay.batch)])
    return dict(
        errors=errors,
        snapshot=snapshot,
        other_stage_numel=sum(to_local(p).numel() for p in other.parameters()),
        head_bias_numel=to_local(head.bias).numel(),
    )


def run_layouts(layouts: list[dict]) -> list[dict]:
    """Worker: the checks for each layout in turn (the mesh is rebuilt each time)."""
    results = []
    for i, cfg in enumerate(layouts):
        if cfg.get("pipeline_parallel_size", 1) > 1:
            results.append(run_pipeline_checks(cfg))
        else:
            results.append(run_layer_checks(cfg, with_snapshot=i == 0))
    return results


def assert_close_to_reference(result: dict, label: str, min_checks: int = 150) -> None:
    """Every recorded error is within TOL (names the failing check)."""
    bad = {k: v for k, v in result["errors"].items() if not v <= TOL}
    assert not bad, f"{label}: {bad}"
    assert len(result["errors"]) > min_checks, f"{label}: only {len(result['errors'])} checks ran"


# --------------------------------------------------------------------------------------
# tp = 1, in this process
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process():
    return run_layer_checks({})


def test_layers_match_torch_nn_on_one_process(one_process):
    assert_close_to_reference(one_process, "tp=1")


def test_size_checks_are_silent_on_one_process(one_process):
    # Everything divides by 1; only the unknown parallel mode is an error.
    assert one_process["bad_sizes"][:4] == ["", "", "", ""]
    assert "parallel='diagonal' is not supported" in one_process["bad_sizes"][4]


def _parameter_placements() -> dict:
    """Worker: each layer's parameters' placements on this layout (None: a plain tensor)."""
    from libai.layers import LayerNorm, Linear, LMLogits, VocabEmbedding

    params = {
        "col.weight": Linear(4, 6, parallel="col").weight,
        "col.bias": Linear(4, 6, parallel="col").bias,
        "row.weight": Linear(4, 6, parallel="row").weight,
        "row.bias": Linear(4, 6, parallel="row").bias,
        "data.weight": Linear(4, 6).weight,
        "vocab": VocabEmbedding(8, 4).weight,
        "lm_bias": LMLogits(8, bias=True).bias,
        "ln": LayerNorm(4).weight,
    }
    return {name: tuple(map(str, p.placements)) if isinstance(p, DTensor) else None for name, p in params.items()}


def _placements_under(layouts: list[dict]) -> list[dict]:
    """Worker: `_parameter_placements` under each layout in turn."""
    results = []
    for cfg in layouts:
        dist.setup_dist_util(cfg, device="cpu")
        results.append(_parameter_placements())
    return results


def test_parameters_are_dtensors_with_the_convention_placements_and_plain_where_nothing_is_split():
    dist.setup_dist_util({}, device="cpu")
    assert set(_parameter_placements().values()) == {None}, "one process: every parameter is a plain tensor"
    rank0, rank1 = run_on_ranks(_placements_under, 2, [{"tensor_parallel_size": 2}, {"data_parallel_size": 2}])
    assert rank0[0] == rank1[0] == {
        "col.weight": ("S(0)",),
        "col.bias": ("S(0)",),
        "row.weight": ("S(1)",),
        "row.bias": ("R",),
        "data.weight": ("R",),
        "vocab": ("S(0)",),
        "lm_bias": ("S(0)",),
        "ln": ("R",),
    }
    assert set(rank0[1].values()) == {None}, "dp2: a one-rank tensor-parallel mesh keeps plain tensors"


def test_cross_entropy_checks_shapes():
    from libai.layers import ParallelCrossEntropyLoss

    dist.setup_dist_util({}, device="cpu")
    with pytest.raises(ValueError, match="must agree on all but the last"):
        ParallelCrossEntropyLoss()(torch.zeros(2, 3, 8), torch.zeros(2, 4, dtype=torch.long))


def test_compiled_cross_entropy_equals_the_hand_written_one():
    """On one tensor-parallel rank a compiled model takes the native loss (`is_compiling`):
    same per-token values and gradients as the eager, hand-written form, -1 targets too."""
    from libai.layers import ParallelCrossEntropyLoss

    dist.setup_dist_util({}, device="cpu")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator)
    target = torch.randint(0, 11, (2, 5), generator=generator)
    target[0, 0] = -1
    results = []
    for run in (ParallelCrossEntropyLoss(), torch.compile(ParallelCrossEntropyLoss(), backend="aot_eager")):
        x = logits.clone().requires_grad_()
        loss = run(x, target)
        (loss * torch.arange(10.0).view(2, 5)).sum().backward()
        results.append((loss.detach(), x.grad))
    (eager_loss, eager_grad), (compiled_loss, compiled_grad) = results
    assert eager_loss.shape == target.shape
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-6, atol=1e-6)


def test_sdpa_mask_lets_sdpa_apply_a_plain_causal_mask():
    from libai.layers.attention import keep_mask, sdpa_mask

    assert sdpa_mask(None, 4, 4, causal=True, device="cpu") == (None, True)
    # A cache (fewer queries than keys) needs the mask aligned to the last query.
    mask, is_causal = sdpa_mask(None, 1, 4, causal=True, device="cpu")
    assert not is_causal and torch.equal(mask, keep_mask(None, 1, 4, True, "cpu"))
    padding = torch.tensor([[1, 1, 0, 1]])
    mask, is_causal = sdpa_mask(padding, 4, 4, causal=True, device="cpu")
    assert not is_causal and torch.equal(mask, keep_mask(padding, 4, 4, True, "cpu"))
    assert sdpa_mask(None, 4, 4, causal=False, device="cpu") == (None, False)


def test_causal_attention_is_the_same_with_sdpa_is_causal_and_an_explicit_mask():
    """No mask (SDPA's is_causal) and an all-ones padding mask (the explicit causal mask)
    give the same output and gradients."""
    from libai.layers import MultiheadAttention
    from libai.layers.attention import AttnMaskType

    dist.setup_dist_util({}, device="cpu")
    torch.manual_seed(0)
    layer = MultiheadAttention(16, 4, attn_mask_type=AttnMaskType.causal, layer_idx=0)
    x = torch.randn(2, 6, 16)
    outputs = []
    for mask in (None, torch.ones(2, 1, 1, 6)):
        layer.zero_grad()
        out = layer(x, attention_mask=mask)
        out.square().sum().backward()
        outputs.append((out.detach(), [p.grad.clone() for p in layer.parameters()]))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=1e-6, atol=1e-6)
    for a, b in zip(outputs[0][1], outputs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_conv1d_stores_the_weight_in_by_out():
    from libai.layers import Conv1D

    dist.setup_dist_util({}, device="cpu")
    layer = Conv1D(4, 6)
    x = torch.randn(3, 4)
    assert layer.weight.shape == (4, 6)
    torch.testing.assert_close(layer(x), x @ layer.weight + layer.bias)


def test_build_activation_and_drop_path():
    from libai.layers import Activation, build_activation, drop_path

    x = torch.linspace(-3, 3, 13)
    expected = {
        "gelu": F.gelu(x),
        "gelu_tanh": F.gelu(x, approximate="tanh"),
        "relu": F.relu(x),
        "leaky_relu": F.leaky_relu(x),
        "tanh": torch.tanh(x),
        "squared_relu": F.relu(x) ** 2,
        "quick_gelu": x * torch.sigmoid(1.702 * x),
    }
    assert set(expected) == {a.value for a in Activation}
    for name, value in expected.items():
        torch.testing.assert_close(build_activation(name)(x), value)
        torch.testing.assert_close(build_activation(Activation(name))(x), value)
    assert isinstance(build_activation(None), nn.Identity)
    with pytest.raises(ValueError, match="unknown activation 'swish': use one of"):
        build_activation("swish")

    batch = torch.ones(2000, 3)
    assert drop_path(batch, 0.5, training=False) is batch
    dropped = drop_path(batch, 0.25, training=True)
    kept = dropped[:, 0] != 0
    assert torch.all(dropped[kept] == 1 / 0.75), "kept samples are scaled by 1 / keep_prob"
    assert torch.all((dropped == 0).all(dim=1) | (dropped != 0).all(dim=1)), "whole samples are dropped"
    assert 0.2 < 1 - kept.float().mean().item() < 0.3


def test_libai_import_paths_resolve():
    """The import paths LiBai's configs and projects use."""
    import importlib

    paths = {
        "libai.data.data_utils": ["get_indexed_dataset", "MMapIndexedDataset"],
        "libai.models.utils": ["GraphBase", "ModelLoaderHuggerFace", "GPT2LoaderHuggerFace", "BertLoaderHuggerFace"],
        "libai.engine.trainer": ["HookBase"],
        "libai.inference.generator.generation_utils": ["Generator", "LogitsProcessorList"],
        "libai.config": ["default_argument_parser", "LazyCall", "instantiate", "try_get_key"],
        "libai.models": ["build_model", "build_graph"],
        "libai.layers": ["Conv1D", "build_activation", "drop_path", "DropPath", "SinePositionalEmbedding"],
        "libai.engine": ["default_argument_parser", "DefaultTrainer", "default_setup"],
    }
    for module, names in paths.items():
        loaded = importlib.import_module(module)
        for name in names:
            assert hasattr(loaded, name), f"{module}.{name}"
    from libai.config import default_argument_parser
    from libai.engine import default_argument_parser as engine_parser

    assert engine_parser is default_argument_parser
    args = default_argument_parser().parse_args(["--config-file", "c.py", "train.train_iter=3"])
    assert (args.config_file, args.opts) == ("c.py", ["train.train_iter=3"])


def test_build_model_instantiates_on_this_ranks_device():
    from libai.config import LazyCall
    from libai.models import build_model

    dist.setup_dist_util({}, device="cpu")
    model = build_model(LazyCall(nn.Linear)(in_features=2, out_features=3))
    assert isinstance(model, nn.Linear) and model.weight.device.type == "cpu"


@pytest.mark.parametrize("dim", [6, 5])
def test_sine_positional_embedding_is_the_sinusoid_table(dim):
    from libai.layers import SinePositionalEmbedding

    layer = SinePositionalEmbedding(7, dim)
    ids = torch.tensor([[0, 3, 6]])
    out = layer(ids)
    assert out.shape == (1, 3, dim)
    for row, p in zip(out[0], (0, 3, 6)):
        for col in range(dim):
            angle = p / 10000 ** ((col - col % 2) / dim)
            expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert row[col].item() == pytest.approx(expected, abs=1e-6)
    assert "position_embedding" not in layer.state_dict()  # fixed: not trained, not saved
