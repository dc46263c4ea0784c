"""Swin Transformer (V1 and V2): windows, relative positions, shifted-window masks, outputs, configs."""
from __future__ import annotations

import math

import pytest
import torch

from libai.config import get_config, instantiate
from libai.layers.utils import to_local
from libai.models import SwinTransformer, SwinTransformerV2
from libai.models.swin_transformer import (
    SwinTransformerBlock,
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from libai.utils import distributed as dist

MNIST_SWIN = dict(
    img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=7
)


@pytest.fixture(autouse=True)
def one_process_layout():
    dist.setup_dist_util({}, device="cpu")
    torch.manual_seed(0)


def test_window_partition_and_reverse_round_trip():
    x = torch.randn(2, 8, 12, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 3, 4, 4, 3)
    # Windows are image-major, row-major within an image.
    torch.testing.assert_close(windows[1], x[0, 0:4, 4:8])
    torch.testing.assert_close(windows[3], x[0, 4:8, 0:4])
    torch.testing.assert_close(windows[6], x[1, 0:4, 0:4])
    torch.testing.assert_close(window_reverse(windows, 4, 8, 12), x)


def test_relative_position_index_of_a_2x2_window():
    # Tokens (0,0), (0,1), (1,0), (1,1); index = (dh + 1) * 3 + (dw + 1) over a 3x3 table.
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index((2, 2)), expected)
    index = relative_position_index((3, 2))
    assert index.shape == (6, 6) and index.min() == 0 and index.max() == 5 * 3 - 1


def test_shifted_window_mask_separates_rolled_in_regions():
    mask = shifted_window_mask((4, 4), window_size=2, shift_size=1)
    assert mask.shape == (4, 4, 4)
    assert torch.equal(mask[0], torch.zeros(4, 4))  # the top-left window is one region
    # The bottom-right window holds four tokens from four regions: each sees only itself.
    assert torch.equal(mask[3], (1 - torch.eye(4)) * -100.0)


def test_shifted_window_block_does_not_attend_across_regions():
    """Inside one shifted window, perturbing a token of another region leaves a token's
    output unchanged; perturbing one of its own region changes it."""
    block = SwinTransformerBlock(8, (4, 4), num_heads=2, window_size=2, shift_size=1).eval()
    x, noise = torch.randn(1, 16, 8), 10 * torch.randn(8)

    def out_at(token: int, perturbed: int) -> torch.Tensor:
        y = x.clone()
        y[0, perturbed] += noise  # not a constant, which the block's LayerNorm would remove
        return block(y)[0, token]

    base = block(x)[0]
    # Token (0,0) is rolled to the bottom-right window with (0,3), (3,0), (3,3): all other regions.
    torch.testing.assert_close(out_at(0, 3), base[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out_at(0, 12), base[0], atol=1e-6, rtol=0)
    # Tokens (1,1) and (1,2) share a region and a shifted window.
    assert (out_at(5, 6) - base[5]).abs().max() > 1e-3


def test_window_attention_matches_the_formula():
    torch.manual_seed(1)
    attn = WindowAttention(8, (2, 2), num_heads=2, qk_scale=0.3).eval()
    x = torch.randn(6, 4, 8)  # 3 images x 2 windows of 4 tokens
    mask = torch.zeros(2, 4, 4)
    mask[1, 0, 3] = -100.0
    qkv = x @ to_local(attn.qkv.weight).T + to_local(attn.qkv.bias)
    q, k, v = qkv.view(6, 4, 2, 3, 4).permute(3, 0, 2, 1, 4)  # per-head layout [heads, 3, head_dim]
    table = to_local(attn.relative_position_bias_table)
    bias = table[relative_position_index((2, 2)).view(-1)].view(4, 4, 2).permute(2, 0, 1)
    scores = 0.3 * q @ k.transpose(-1, -2) + bias + mask.repeat(3, 1, 1)[:, None]
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(6, 4, 8)
    expected = context @ to_local(attn.proj.weight).T + to_local(attn.proj.bias)
    torch.testing.assert_close(attn(x, mask), expected)


def test_swin_trains_and_evaluates_on_mnist_sized_images():
    model = SwinTransformer(**MNIST_SWIN)
    stage0, stage1 = model.layers
    assert [b.shift_size for b in stage0.blocks] == [0, 3]
    assert [(b.window_size, b.shift_size) for b in stage1.blocks] == [(7, 0), (7, 0)]  # one 7x7 window
    assert [b.layer_idx for s in model.layers for b in s.blocks] == [0, 1, 2, 3]
    assert stage0.downsample.layer_idx == 1 and stage1.downsample is None
    images, labels = torch.randn(3, 1, 28, 28), torch.tensor([1, 5, 9])
    losses = model(images, labels)
    assert set(losses) == {"losses"} and torch.isfinite(losses["losses"])
    losses["losses"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()
    scores = model(images, labels)
    assert set(scores) == {"prediction_scores"} and scores["prediction_scores"].shape == (3, 10)


def test_swin_options_and_errors():
    model = SwinTransformer(**{**MNIST_SWIN, "ape": True, "num_classes": 0, "drop_path_rate": 0.3})
    assert model.patch_embed.absolute_pos_embed.shape == (1, 196, 16)
    assert model(torch.randn(2, 1, 28, 28))["prediction_scores"].shape == (2, 32)  # pooled features
    assert [round(b.drop_path.drop_prob, 6) for b in model.layers[1].blocks] == [0.2, 0.3]
    with pytest.raises(ValueError, match=r"14x14 cannot be cut into 5x5 windows"):
        SwinTransformer(**{**MNIST_SWIN, "window_size": 5})
    with pytest.raises(ValueError, match=r"images of shape \[batch, 1, 28, 28\]"):
        SwinTransformer(**MNIST_SWIN)(torch.randn(2, 3, 28, 28))


SWIN_CONFIGS = {
    "swin_tiny_patch4_window7_224": (224, 96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 0.2),
    "swin_small_patch4_window7_224": (224, 96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 0.3),
    "swin_base_patch4_window7_224": (224, 128, [2, 2, 18, 2], [4, 8, 16, 32], 7, 0.5),
    "swin_base_patch4_window12_384": (384, 128, [2, 2, 18, 2], [4, 8, 16, 32], 12, 0.1),
    "swin_large_patch4_window7_224": (224, 192, [2, 2, 18, 2], [6, 12, 24, 48], 7, 0.1),
    "swin_large_patch4_window12_384": (384, 192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 0.1),
    "swin_tiny_c24_patch4_window8_256": (256, 96, [2, 2, 6, 2], [4, 8, 16, 32], 8, 0.2),
}


@pytest.mark.parametrize("name", sorted(SWIN_CONFIGS))
def test_swin_configs_have_libai_values(name):
    model = get_config(f"common/models/swin/{name}.py").model
    cfg = model.cfg
    assert model._target_ is SwinTransformer
    got = (cfg.img_size, cfg.embed_dim, list(cfg.depths), list(cfg.num_heads), cfg.window_size, cfg.drop_path_rate)
    assert got == SWIN_CONFIGS[name]
    assert (cfg.patch_size, cfg.in_chans, cfg.num_classes, cfg.mlp_ratio, cfg.qkv_bias) == (4, 3, 1000, 4.0, True)


def test_swin_config_instantiates_through_from_config():
    model = get_config("common/models/swin/swin_tiny_patch4_window7_224.py").model
    model.cfg.update(img_size=56, depths=[1, 1], num_heads=[3, 6], num_classes=5)  # 14x14 then 7x7 tokens
    swin = instantiate(model)
    assert isinstance(swin, SwinTransformer) and swin.num_features == 192
    assert swin.layers[0].blocks[0].attn.scale == pytest.approx(32**-0.5)
    assert swin(torch.randn(1, 3, 56, 56))["prediction_scores"].shape == (1, 5)


# --------------------------------------------------------------------------------------
# Swin V2
# --------------------------------------------------------------------------------------


def test_swinv2_continuous_position_bias():
    from libai.models.swin_transformer_v2 import WindowAttention as WindowAttentionV2
    from libai.models.swin_transformer_v2 import relative_coords_table

    table = relative_coords_table((3, 2), (0, 0))
    assert table.shape == (1, 5, 3, 2)
    # (dh, dw) = (-2, +1) over a 3x2 window: (-1, +1) normalised, x8, then sign * log2(|x| + 1) / 3.
    torch.testing.assert_close(table[0, 0, 2], torch.tensor([-math.log2(9) / 3, math.log2(9) / 3]))
    # Normalised by the pre-training window instead when one is given: (-2/4, 1/4) x 8 = (-4, 2).
    with_pretrained = relative_coords_table((3, 2), (5, 5))[0, 0, 2]
    torch.testing.assert_close(with_pretrained, torch.tensor([-math.log2(5) / 3, math.log2(3) / 3]))
    attn = WindowAttentionV2(8, (3, 2), num_heads=2)
    assert attn.cpb_mlp(attn.relative_coords_table).shape == (1, 5, 3, 2)
    bias = attn.position_bias()
    assert bias.shape == (2, 6, 6) and bias.min() > 0 and bias.max() < 16
    assert torch.equal(to_local(attn.logit_scale), torch.full((1, 2, 1, 1), math.log(10.0)))


def test_swinv2_attention_matches_the_formula():
    from libai.models.swin_transformer_v2 import WindowAttention as WindowAttentionV2

    torch.manual_seed(2)
    attn = WindowAttentionV2(8, (2, 2), num_heads=2).eval()
    with torch.no_grad():
        to_local(attn.q_bias).normal_()
        to_local(attn.v_bias).normal_()
        to_local(attn.logit_scale).fill_(math.log(200.0))  # capped at 100
    x = torch.randn(4, 4, 8)
    qkv = x @ to_local(attn.qkv.weight).T
    q, k, v = qkv.view(4, 4, 2, 3, 4).permute(3, 0, 2, 1, 4)
    q = q + to_local(attn.q_bias).view(2, 1, 4)
    v = v + to_local(attn.v_bias).view(2, 1, 4)
    cos = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).transpose(-1, -2)
    scores = 100.0 * cos + attn.position_bias()
    context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(4, 4, 8)
    expected = context @ to_local(attn.proj.weight).T + to_local(attn.proj.bias)
    torch.testing.assert_close(attn(x), expected)


def test_swinv2_blocks_start_as_the_identity_and_train():
    model = SwinTransformerV2(**MNIST_SWIN)
    block = model.layers[0].blocks[1]
    x = torch.randn(2, 196, 16)
    torch.testing.assert_close(block(x), x)  # post-norms start at zero
    assert model.layers[0].downsample.norm.normalized_shape == (32,)  # V2 normalises after the reduction
    images, labels = torch.randn(3, 1, 28, 28), torch.tensor([1, 5, 9])
    losses = model(images, labels)
    assert set(losses) == {"losses"} and torch.isfinite(losses["losses"])
    losses["losses"].backward()
    assert to_local(block.norm1.weight).grad.abs().sum() > 0
    model.eval()
    assert model(images)["prediction_scores"].shape == (3, 10)


SWINV2_CONFIGS = {
    "swinv2_tiny_patch4_window8_256": (8, [2, 2, 6, 2], [3, 6, 12, 24], 0.2),
    "swinv2_tiny_patch4_window16_256": (16, [2, 2, 6, 2], [3, 6, 12, 24], 0.2),
    "swinv2_small_patch4_window8_256": (8, [2, 2, 18, 2], [3, 6, 12, 24], 0.3),
    "swinv2_small_patch4_window16_256": (16, [2, 2, 18, 2], [3, 6, 12, 24], 0.3),
    "swinv2_base_patch4_window8_256": (8, [2, 2, 18, 2], [4, 8, 16, 32], 0.5),
    "swinv2_base_patch4_window16_256": (16, [2, 2, 18, 2], [4, 8, 16, 32], 0.5),
}


@pytest.mark.parametrize("name", sorted(SWINV2_CONFIGS))
def test_swinv2_configs_have_libai_values(name):
    model = get_config(f"common/models/swinv2/{name}.py").model
    cfg = model.cfg
    assert model._target_ is SwinTransformerV2
    assert (cfg.window_size, list(cfg.depths), list(cfg.num_heads), cfg.drop_path_rate) == SWINV2_CONFIGS[name]
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, list(cfg.pretrained_window_sizes)) == (256, 4, 96, [0, 0, 0, 0])


def test_swinv2_config_instantiates_through_from_config():
    model = get_config("common/models/swinv2/swinv2_tiny_patch4_window16_256.py").model
    model.cfg.update(img_size=64, depths=[1, 1], num_heads=[3, 6], num_classes=5, pretrained_window_sizes=[8, 8])
    swin = instantiate(model)  # 16x16 tokens (one 16x16 window), then 8x8
    assert isinstance(swin, SwinTransformerV2)
    assert swin.layers[0].blocks[0].attn.pretrained_window_size == (8, 8)
    assert swin(torch.randn(1, 3, 64, 64))["prediction_scores"].shape == (1, 5)


@pytest.mark.parametrize("cls", [SwinTransformer, SwinTransformerV2])
def test_swin_activation_checkpointing_gives_the_same_gradients(cls):
    from libai.layers import enable_activation_checkpointing

    images, labels = torch.randn(2, 1, 28, 28), torch.tensor([3, 4])
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = cls(**MNIST_SWIN)
        if recompute:
            assert enable_activation_checkpointing(model) == 4  # every block
        model(images, labels)["losses"].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(plain, recomputed)
