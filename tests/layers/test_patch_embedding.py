"""PatchEmbedding: LiBai's image -> patch-token layer is a strided convolution."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from libai.layers import LayerNorm, PatchEmbedding
from libai.layers.utils import full_tensor
from libai.utils import distributed as dist


@pytest.fixture(autouse=True)
def one_process_layout() -> None:
    dist.setup_dist_util({}, device="cpu")
    torch.manual_seed(0)


def conv_reference(embed: PatchEmbedding, images: torch.Tensor) -> torch.Tensor:
    weight, bias = full_tensor(embed.proj.weight), full_tensor(embed.proj.bias)
    return F.conv2d(images, weight, bias, stride=embed.patch_size)


def test_tokens_equal_a_strided_conv2d_flattened_row_major() -> None:
    embed = PatchEmbedding(img_size=28, patch_size=7, in_chans=3, embed_dim=16)
    images = torch.randn(2, 3, 28, 28)
    tokens = embed(images)
    assert tokens.shape == (2, 16, 16) and embed.num_patches == 16 and embed.grid_size == (4, 4)
    expected = conv_reference(embed, images)  # [2, 16, 4, 4]
    torch.testing.assert_close(tokens, expected.flatten(2).transpose(1, 2))
    # Token 5 is grid row 1, column 1.
    torch.testing.assert_close(tokens[:, 5], expected[:, :, 1, 1])
    assert list(embed.state_dict()) == ["proj.weight", "proj.bias"]  # LiBai's Conv2d keys
    assert embed.proj.weight.shape == (16, 3, 7, 7)


def test_rectangular_sizes_and_defaults() -> None:
    embed = PatchEmbedding(img_size=(12, 8), patch_size=(4, 2), in_chans=1, embed_dim=5)
    assert embed.grid_size == (3, 4) and embed(torch.randn(1, 1, 12, 8)).shape == (1, 12, 5)
    default = PatchEmbedding()
    assert (default.img_size, default.patch_size, default.num_patches) == ((224, 224), (16, 16), 196)
    assert default.proj.weight.shape == (768, 3, 16, 16) and default.layer_idx == 0


def test_initialisation_is_torch_conv2d_default() -> None:
    torch.manual_seed(3)
    embed = PatchEmbedding(img_size=8, patch_size=4, in_chans=2, embed_dim=6)
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(2, 6, kernel_size=4, stride=4)
    assert torch.equal(embed.proj.weight, conv.weight) and torch.equal(embed.proj.bias, conv.bias)


def test_norm_layer_is_applied_to_the_tokens() -> None:
    embed = PatchEmbedding(img_size=8, patch_size=4, in_chans=1, embed_dim=6, norm_layer=LayerNorm)
    images = torch.randn(3, 1, 8, 8)
    raw = conv_reference(embed, images).flatten(2).transpose(1, 2)
    torch.testing.assert_close(embed(images), F.layer_norm(raw, (6,)))
    assert isinstance(embed.norm, LayerNorm)
    # A plain torch norm (no layer_idx argument) works too.
    embed = PatchEmbedding(img_size=8, patch_size=4, in_chans=1, embed_dim=6, norm_layer=torch.nn.LayerNorm)
    torch.testing.assert_close(embed(images), embed.norm(conv_reference(embed, images).flatten(2).transpose(1, 2)))


def test_flatten_false_keeps_the_grid() -> None:
    embed = PatchEmbedding(img_size=(12, 8), patch_size=4, in_chans=1, embed_dim=6, flatten=False)
    images = torch.randn(2, 1, 12, 8)
    grid = embed(images)
    assert grid.shape == (2, 6, 3, 2)
    torch.testing.assert_close(grid, conv_reference(embed, images))


def test_wrong_image_size_is_a_clear_error() -> None:
    embed = PatchEmbedding(img_size=28, patch_size=7, in_chans=1, embed_dim=8)
    message = r"expects images of shape \[batch, 1, 28, 28\], got \(2, 1, 32, 32\)"
    with pytest.raises(ValueError, match=message):
        embed(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got \(2, 3, 28, 28\)"):
        embed(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"patch_size \(32, 32\) does not fit img_size \(28, 28\)"):
        PatchEmbedding(img_size=28, patch_size=32)
