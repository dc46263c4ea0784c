"""The model zoo on one process: shapes, losses, backward, eval outputs, configs, init."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from libai.config import get_config, instantiate
from libai.layers import AttnMaskType
from libai.layers.utils import full_tensor, to_local
from libai.models import (
    BertForClassification,
    BertForPreTraining,
    BertModel,
    GPTForPreTraining,
    GPTModel,
    VisionTransformer,
)
from libai.utils import distributed as dist

B, S, V = 3, 8, 64
GPT_CFG = dict(
    hidden_layers=2, vocab_size=V, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, max_seq_length=16
)
BERT_CFG = dict(
    vocab_size=V,
    hidden_size=32,
    hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=16,
    num_labels=3,
)


@pytest.fixture(autouse=True)
def one_process_layout():
    dist.setup_dist_util({}, device="cpu")
    torch.manual_seed(0)


def ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, S), generator=torch.Generator().manual_seed(seed))


def padding_mask() -> torch.Tensor:
    mask = torch.ones(B, S, dtype=torch.long)
    mask[0, 5:] = 0
    return mask


def assert_every_parameter_has_a_gradient(model: torch.nn.Module, skip: tuple = ()) -> None:
    for name, p in model.named_parameters():
        if any(s in name for s in skip):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------------------
# GPT
# --------------------------------------------------------------------------------------


def test_gpt_model_logits_and_causality():
    model = GPTModel(**GPT_CFG).eval()
    x = ids()
    logits = model(x)
    assert logits.shape == (B, S, V)
    # Changing a later token leaves earlier positions' logits unchanged.
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % V
    torch.testing.assert_close(model(y)[:, :-1], logits[:, :-1])


def test_gpt_for_pretraining_train_and_eval():
    model = GPTForPreTraining(GPT_CFG)
    x = ids()
    losses = model(x, labels=x)
    assert set(losses) == {"lm_loss"}
    # A fresh model predicts close to uniformly.
    assert torch.isfinite(losses["lm_loss"]) and abs(losses["lm_loss"].item() - math.log(V)) < 1.0
    losses["lm_loss"].backward()
    assert_every_parameter_has_a_gradient(model)
    model.eval()
    assert set(model(x)) == {"prediction_scores"}
    scores = model(x)["prediction_scores"]
    assert scores.shape == (B, S, V)
    # With labels, evaluation returns the per-token losses (what PPLEvaluator reads).
    outputs = model(x, labels=x)
    assert set(outputs) == {"lm_loss"}
    expected = F.cross_entropy(scores.reshape(-1, V), x.reshape(-1), reduction="none").reshape(B, S)
    torch.testing.assert_close(outputs["lm_loss"], expected)


def test_gpt_initialisation_is_megatron_like():
    torch.manual_seed(0)
    model = GPTModel(**{**GPT_CFG, "hidden_size": 128, "ffn_hidden_size": 512, "num_attention_heads": 4})
    layer = model.transformer.layers[0]
    scaled = 0.02 / math.sqrt(2 * GPT_CFG["hidden_layers"])
    assert full_tensor(layer.self_attention.query_key_value.weight).std().item() == pytest.approx(0.02, rel=0.05)
    assert full_tensor(layer.mlp.dense_4h_to_h.weight).std().item() == pytest.approx(scaled, rel=0.05)
    assert full_tensor(layer.self_attention.dense.weight).std().item() == pytest.approx(scaled, rel=0.05)
    assert full_tensor(model.embeddings.token_embeddings.weight).std().item() == pytest.approx(0.02, rel=0.05)
    unscaled = GPTModel(**{**GPT_CFG, "hidden_size": 128, "use_scaled_init_for_output_weights": False})
    weight = full_tensor(unscaled.transformer.layers[0].mlp.dense_4h_to_h.weight)
    assert weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_gpt_constructor_flags_reach_every_layer():
    """GPTModel gives the layer arguments once; each stacked layer gets all of them and its own index."""
    flags = dict(
        attention_dropout_prob=0.1,
        output_dropout_prob=0.2,
        layernorm_epsilon=1e-6,
        apply_residual_post_layernorm=True,
        activation="gelu_tanh",
    )
    stack = GPTModel(**{**GPT_CFG, "hidden_layers": 3}, **flags).transformer
    assert [layer.layer_idx for layer in stack.layers] == [0, 1, 2]
    for layer in stack.layers:
        assert layer.apply_residual_post_layernorm and not layer.is_decoder
        assert layer.self_attention.attn_mask_type == AttnMaskType.causal
        assert layer.self_attention.attention_dropout_prob == 0.1 and layer.mlp.dropout.p == 0.2
        assert layer.mlp.activation == "gelu_tanh" and layer.input_layernorm.eps == 1e-6
    assert (stack.layernorm_f.layer_idx, stack.layernorm_f.eps) == (-1, 1e-6)


def test_gpt_too_long_input_is_a_clear_error():
    with pytest.raises(ValueError, match="reaches position 17 but max_seq_length is 16"):
        GPTModel(**GPT_CFG)(torch.zeros(1, 17, dtype=torch.long))


def test_gpt_config_builds_from_get_config():
    conf = get_config("common/models/gpt.py")
    conf.model.cfg.update(GPT_CFG)
    model = instantiate(conf.model)
    assert isinstance(model, GPTForPreTraining) and len(model.GPT_model.transformer.layers) == 2
    assert isinstance(instantiate(conf.GPT_model), GPTModel)


def test_missing_required_config_key_names_it():
    cfg = {k: v for k, v in GPT_CFG.items() if k != "hidden_size"}
    with pytest.raises(ValueError, match="GPTModel config has no 'hidden_size'"):
        GPTModel(cfg)


# --------------------------------------------------------------------------------------
# BERT
# --------------------------------------------------------------------------------------


def test_bert_model_outputs_and_padding():
    model = BertModel(BERT_CFG).eval()
    x, mask = ids(), padding_mask()
    sequence, pooled = model(x, mask)
    assert sequence.shape == (B, S, 32) and pooled.shape == (B, 32)
    # Padded keys are ignored: changing a padded token does not change the real tokens' outputs.
    y = x.clone()
    y[0, 6] = (y[0, 6] + 1) % V
    torch.testing.assert_close(model(y, mask)[0][0, :5], sequence[0, :5])
    no_pool = BertModel({**BERT_CFG, "add_pooling_layer": False})
    assert no_pool(x, mask)[1] is None


def test_bert_for_pretraining_losses_and_eval():
    model = BertForPreTraining(BERT_CFG)
    x, mask = ids(), padding_mask()
    loss_mask = torch.zeros(B, S)
    loss_mask[:, 1:3] = 1
    ns_labels = torch.tensor([0, 1, -1])
    losses = model(x, mask, tokentype_ids=torch.zeros_like(x), ns_labels=ns_labels, lm_labels=x, loss_mask=loss_mask)
    assert set(losses) == {"lm_loss", "sop_loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert_every_parameter_has_a_gradient(model)

    model.eval()
    outputs = model(x, mask)
    assert set(outputs) == {"prediction_scores", "seq_relationship_score"}
    assert outputs["prediction_scores"].shape == (B, S, V) and outputs["seq_relationship_score"].shape == (B, 2)
    # Evaluation with labels: per-token masked-LM losses (for PPLEvaluator).
    with_labels = model(x, mask, ns_labels=ns_labels, lm_labels=x, loss_mask=loss_mask)
    assert set(with_labels) == {"lm_loss", "seq_relationship_score"}
    per_token = F.cross_entropy(outputs["prediction_scores"].reshape(-1, V), x.reshape(-1), reduction="none")
    torch.testing.assert_close(with_labels["lm_loss"], per_token.reshape(B, S))
    # Training loss: lm = sum(loss * loss_mask) / sum(loss_mask); sop ignores label -1.
    losses = model.cls_head.loss_func(
        outputs["prediction_scores"], x, loss_mask, outputs["seq_relationship_score"], ns_labels
    )
    expected_lm = (per_token * loss_mask.reshape(-1)).sum() / loss_mask.sum()
    torch.testing.assert_close(losses["lm_loss"], expected_lm)
    expected_sop = F.cross_entropy(outputs["seq_relationship_score"][:2], ns_labels[:2])
    torch.testing.assert_close(losses["sop_loss"], expected_sop)


def test_bert_lm_head_is_tied_to_word_embeddings():
    model = BertForPreTraining(BERT_CFG)
    tied = model.bert.embeddings.vocab_embeddings.weight
    assert not any(p is tied for n, p in model.cls_head.named_parameters())
    x = ids()
    model(x, torch.ones_like(x), lm_labels=x)["lm_loss"].backward()
    # Gradient from both the input lookup and the output layer reaches the one weight.
    assert tied.grad is not None and (full_tensor(tied.grad).abs().sum(dim=1) > 0).sum() > len(x.unique())


def test_bert_without_binary_head_has_no_sop_loss():
    model = BertForPreTraining({**BERT_CFG, "add_binary_head": False})
    x = ids()
    assert set(model(x, torch.ones_like(x), ns_labels=torch.zeros(B, dtype=torch.long), lm_labels=x)) == {"lm_loss"}
    with pytest.raises(ValueError, match="binary head reads the pooled output"):
        BertForPreTraining({**BERT_CFG, "add_pooling_layer": False})


def test_bert_for_classification():
    model = BertForClassification(BERT_CFG)
    x, mask = ids(), padding_mask()
    losses = model(x, mask, labels=torch.tensor([0, 2, 1]))
    assert set(losses) == {"cls_loss"} and torch.isfinite(losses["cls_loss"])
    losses["cls_loss"].backward()
    assert_every_parameter_has_a_gradient(model, skip=("seq_relationship",))
    model.eval()
    assert set(model(x, mask)) == {"logits"} and model(x, mask)["logits"].shape == (B, 3)


def test_bert_configs_build_from_get_config():
    conf = get_config("common/models/bert.py")
    small = {k: v for k, v in BERT_CFG.items()}
    models = (("model", BertForPreTraining), ("bert_model", BertModel), ("classification_model", BertForClassification))
    for name, cls in models:
        conf[name].cfg.update(small)
        assert isinstance(instantiate(conf[name]), cls)


# --------------------------------------------------------------------------------------
# ViT
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("patch_size", [4, 7])
def test_vit_on_mnist_sized_images(patch_size):
    model = VisionTransformer(
        img_size=28, patch_size=patch_size, in_chans=1, embed_dim=32, depth=2, num_heads=4, num_classes=10
    )
    images, labels = torch.randn(B, 1, 28, 28), torch.tensor([1, 5, 9])
    assert model.patch_embed.num_patches == (28 // patch_size) ** 2
    losses = model(images, labels)
    assert set(losses) == {"losses"} and torch.isfinite(losses["losses"])
    losses["losses"].backward()
    assert_every_parameter_has_a_gradient(model)
    model.eval()
    outputs = model(images, labels)
    assert set(outputs) == {"prediction_scores"} and outputs["prediction_scores"].shape == (B, 10)


def test_vit_patch_embedding_is_a_strided_convolution():
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=3, embed_dim=16, depth=0, num_heads=4, num_classes=10)
    embed = model.patch_embed
    images = torch.randn(2, 3, 28, 28)
    weight, bias = full_tensor(embed.proj.weight), full_tensor(embed.proj.bias)
    conv = F.conv2d(images, weight.view(16, 3, 7, 7), bias, stride=7).flatten(2).transpose(1, 2)
    tokens = embed(images)
    assert tokens.shape == (2, 17, 16)
    torch.testing.assert_close(tokens[:, 1:], conv + to_local(embed.pos_embed)[:, 1:])
    torch.testing.assert_close(tokens[:, 0], to_local(embed.cls_token + embed.pos_embed)[:, 0].expand(2, -1))


def test_vit_drop_path_rises_with_depth_and_custom_loss():
    model = VisionTransformer(
        img_size=28, patch_size=7, in_chans=1, embed_dim=16, depth=3, num_heads=2, num_classes=10,
        drop_path_rate=0.2, loss_func=torch.nn.MultiMarginLoss(),
    )
    assert [round(b.drop_path.drop_prob, 6) for b in model.blocks[1:]] == [0.1, 0.2]
    assert isinstance(model.loss_func, torch.nn.MultiMarginLoss)
    assert torch.isfinite(model(torch.randn(2, 1, 28, 28), torch.tensor([3, 4]))["losses"])


def test_vit_bad_geometry_is_a_clear_error():
    with pytest.raises(ValueError, match=r"img_size \(28\) is not divisible by patch_size \(5\)"):
        VisionTransformer(img_size=28, patch_size=5, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    model = VisionTransformer(img_size=28, patch_size=7, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    with pytest.raises(ValueError, match=r"images of shape \[batch, 1, 28, 28\], got \(2, 3, 28, 28\)"):
        model(torch.randn(2, 3, 28, 28))


def test_vit_configs_build_from_get_config():
    for size, width in (("tiny", 192), ("small", 384), ("base", 768)):
        conf = get_config(f"common/models/vit/vit_{size}_patch16_224.py")
        assert conf.model.cfg.embed_dim == width
        conf.model.cfg.update(img_size=28, patch_size=7, in_chans=1, num_classes=10, depth=1)
        assert isinstance(instantiate(conf.model), VisionTransformer)


# --------------------------------------------------------------------------------------
# The layers' GELU option used by GPT-2 (libai.layers addition)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True])
def test_mlp_gelu_tanh_option(fused):
    from libai.layers import MLP, TransformerLayer

    mlp = MLP(8, 16, activation="gelu_tanh", bias_gelu_fusion=fused)
    with torch.no_grad():
        to_local(mlp.dense_h_to_4h.bias).normal_()
    x = torch.randn(2, 3, 8) * 3
    w1, b1 = full_tensor(mlp.dense_h_to_4h.weight), full_tensor(mlp.dense_h_to_4h.bias)
    w2, b2 = full_tensor(mlp.dense_4h_to_h.weight), full_tensor(mlp.dense_4h_to_h.bias)
    expected = F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)
    torch.testing.assert_close(mlp(x), expected)
    assert not torch.allclose(F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2), expected, atol=1e-5)
    assert TransformerLayer(8, 16, 2, activation="gelu_tanh").mlp.activation == "gelu_tanh"
    assert MLP(8, 16).activation == "gelu"
    with pytest.raises(ValueError, match="MLP activation='relu' is not supported"):
        MLP(8, 16, activation="relu")
