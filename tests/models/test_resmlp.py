"""ResMLP on one process, and the ResMLP and ViT model configs (LiBai's values)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from libai.config import get_config, instantiate
from libai.layers import enable_activation_checkpointing
from libai.layers.utils import full_tensor
from libai.models import ResMLP, VisionTransformer
from libai.utils import distributed as dist

MNIST = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10)


@pytest.fixture(autouse=True)
def one_process_layout() -> None:
    dist.setup_dist_util({}, device="cpu")
    torch.manual_seed(0)


def small_resmlp(**kwargs) -> ResMLP:
    return ResMLP(**{**MNIST, "embed_dim": 8, "depth": 2, "init_scale": 0.5, **kwargs})


def reference_logits(model: ResMLP, images: torch.Tensor) -> torch.Tensor:
    """ResMLP's forward written out with plain torch ops on the model's weights."""
    p = {name: full_tensor(value) for name, value in model.named_parameters()}
    x = F.conv2d(images, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=7).flatten(2).transpose(1, 2)
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        h = p[b + "norm1.alpha"] * x + p[b + "norm1.beta"]
        x = x + p[b + "gamma_1"] * F.linear(h.transpose(1, 2), p[b + "attn.weight"], p[b + "attn.bias"]).transpose(1, 2)
        h = p[b + "norm2.alpha"] * x + p[b + "norm2.beta"]
        h = F.linear(F.gelu(F.linear(h, p[b + "mlp.dense_h_to_4h.weight"], p[b + "mlp.dense_h_to_4h.bias"])),
                     p[b + "mlp.dense_4h_to_h.weight"], p[b + "mlp.dense_4h_to_h.bias"])
        x = x + p[b + "gamma_2"] * h
    pooled = (p["norm.alpha"] * x + p["norm.beta"]).mean(dim=1)
    return F.linear(pooled, p["head.weight"], p["head.bias"])


def test_forward_equals_plain_torch_and_outputs_like_vit() -> None:
    model = small_resmlp()
    with torch.no_grad():  # move the Affine and LayerScale vectors off their starting values
        for name, param in model.named_parameters():
            if name.endswith(("alpha", "beta", "gamma_1", "gamma_2")) or "bias" in name:
                param.add_(torch.randn_like(param) * 0.3)
    images, labels = torch.randn(3, 1, 28, 28), torch.tensor([1, 5, 9])
    losses = model(images, labels)
    assert set(losses) == {"losses"}
    torch.testing.assert_close(losses["losses"], F.cross_entropy(reference_logits(model, images), labels))
    losses["losses"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    scores = model(images, labels)["prediction_scores"]
    torch.testing.assert_close(scores, reference_logits(model, images))


def test_starting_values_and_layer_indices() -> None:
    model = small_resmlp(depth=3, init_scale=0.1, drop_path_rate=0.2)
    block = model.blocks[1]
    assert torch.equal(block.gamma_1, torch.full((8,), 0.1)) and torch.equal(block.gamma_2, torch.full((8,), 0.1))
    assert torch.equal(block.norm1.alpha, torch.ones(8)) and torch.equal(block.norm1.beta, torch.zeros(8))
    assert block.attn.weight.shape == (16, 16)  # across the 16 patches
    assert block.mlp.dense_h_to_4h.weight.shape == (32, 8)
    assert torch.equal(block.attn.bias, torch.zeros(16))
    assert 0.015 < block.mlp.dense_h_to_4h.weight.std().item() < 0.025  # trunc_normal(0.02)
    # LiBai's drop path is the same in every block (not rising with depth as in ViT).
    assert [b.drop_path.drop_prob for b in model.blocks] == [0.2, 0.2, 0.2]
    assert [b.layer_idx for b in model.blocks] == [0, 1, 2]
    assert (model.patch_embed.layer_idx, model.norm.layer_idx, model.head.layer_idx) == (0, -1, -1)


def test_no_head_custom_loss_and_dropout() -> None:
    model = small_resmlp(num_classes=0).eval()
    assert model(torch.randn(2, 1, 28, 28))["prediction_scores"].shape == (2, 8)
    model = small_resmlp(loss_func=torch.nn.MultiMarginLoss(), drop_rate=0.3)
    assert isinstance(model.loss_func, torch.nn.MultiMarginLoss)
    assert model.blocks[0].mlp.dropout.p == 0.3
    assert torch.isfinite(model(torch.randn(2, 1, 28, 28), torch.tensor([3, 4]))["losses"])


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    images, labels = torch.randn(2, 1, 28, 28), torch.tensor([0, 7])
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = small_resmlp()
        if recompute:
            assert enable_activation_checkpointing(model) == 2
        model(images, labels)["losses"].backward()
        grads.append([p.grad for p in model.parameters()])
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(plain, recomputed)


RESMLP_CONFIGS = {
    "resmlp_12": dict(patch_size=16, embed_dim=384, depth=12, init_scale=0.1),
    "resmlp_24": dict(patch_size=16, embed_dim=384, depth=24, init_scale=1e-5),
    "resmlp_36": dict(patch_size=16, embed_dim=384, depth=36, init_scale=1e-6),
    "resmlpB_24": dict(patch_size=8, embed_dim=768, depth=24, init_scale=1e-6),
}
VIT_CONFIGS = {
    "vit_tiny_patch16_224": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "vit_small_patch16_224": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "vit_small_patch32_224": dict(patch_size=32, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "vit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "vit_base_patch32_224": dict(patch_size=32, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "vit_large_patch16_224": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "vit_large_patch32_224": dict(patch_size=32, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "vit_huge_patch14_224": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "vit_giant_patch14_224": dict(patch_size=14, embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11),
    "vit_gigantic_patch14_224": dict(patch_size=14, embed_dim=1664, depth=48, num_heads=16, mlp_ratio=64 / 13),
}


@pytest.mark.parametrize("name", sorted(RESMLP_CONFIGS))
def test_resmlp_config_has_libai_values_and_builds(name: str) -> None:
    model = get_config(f"common/models/resmlp/{name}.py").model
    assert model._target_ is ResMLP
    common = dict(img_size=224, in_chans=3, drop_rate=0.0, drop_path_rate=0.05, num_classes=1000, loss_func=None)
    assert dict(model.cfg) == {**common, **RESMLP_CONFIGS[name]}
    model.cfg.update(MNIST, embed_dim=8, depth=1)
    built = instantiate(model)
    assert isinstance(built, ResMLP) and built.blocks[0].gamma_1[0].item() == pytest.approx(model.cfg.init_scale)


@pytest.mark.parametrize("name", sorted(VIT_CONFIGS))
def test_vit_config_has_libai_values_and_builds(name: str) -> None:
    model = get_config(f"common/models/vit/{name}.py").model
    assert model._target_ is VisionTransformer
    common = dict(img_size=224, in_chans=3, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                  num_classes=1000, loss_func=None)
    assert dict(model.cfg) == {**common, **VIT_CONFIGS[name]}
    expected_ffn = {"vit_giant_patch14_224": 6144, "vit_gigantic_patch14_224": 8192}.get(name, 4 * model.cfg.embed_dim)
    assert int(model.cfg.embed_dim * model.cfg.mlp_ratio) == expected_ffn
    # Every argument the config sets is one VisionTransformer takes (only the sizes shrink).
    heads = model.cfg.num_heads
    model.cfg.update(MNIST, embed_dim=2 * heads, depth=1)
    built = instantiate(model)
    assert built.blocks[0].mlp.dense_h_to_4h.out_features == int(2 * heads * model.cfg.mlp_ratio)
