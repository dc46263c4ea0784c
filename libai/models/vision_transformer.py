"""Vision Transformer (ViT) in LiBai's form, built only from `libai.layers`.

Images are cut into non-overlapping patches, each patch is flattened and projected (a
`Linear` over the flattened patch is the same map as a stride-`patch_size` convolution), a
class token is prepended, position embeddings are added, and pre-LN transformer layers
run; the class token's final state feeds the classifier head.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.distributed.tensor import Replicate

from libai.config import configurable
from libai.layers import LayerNorm, Linear, TransformerLayer
from libai.layers.utils import full_init, make_parameter, to_local, tp_mesh

from .utils.config_args import init_kwargs_from_config
from .utils.weight_init import init_method_trunc_normal


class ViTEmbedding(nn.Module):
    """Images [b, c, H, W] -> tokens [b, 1 + patches, embed_dim]: projected patches after
    the class token, plus position embeddings, then dropout.

    The class token and position embeddings live here rather than on the model so that
    this whole block (layer_idx 0) belongs to the first pipeline stage. (The plain patch
    projection, a strided convolution without class token, is `libai.layers.PatchEmbedding`;
    this one keeps its projection as a `Linear` over flattened patches, the weight layout of
    this model's checkpoints.)

    Args:
        img_size: image height and width.
        patch_size: patch height and width (must divide `img_size`).
        in_chans: image channels.
        embed_dim: token size.
        drop_rate: dropout after adding the position embeddings.
        init_method: initialiser of the projection, class token and position embeddings.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        drop_rate: float = 0.0,
        init_method: Callable = init_method_trunc_normal(0.02),
    ) -> None:
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"ViT img_size ({img_size}) is not divisible by patch_size ({patch_size})")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.num_patches = (img_size // patch_size) ** 2
        self.layer_idx = 0
        # Patch features are ordered (channel, row, column), as a convolution kernel's
        # weight flattens, so a Conv2d patch embedding's weight loads by a reshape.
        self.proj = Linear(in_chans * patch_size * patch_size, embed_dim, init_method=init_method, layer_idx=0)
        mesh = tp_mesh(0)
        self.cls_token = make_parameter(full_init((1, 1, embed_dim), init_method), mesh, Replicate())
        self.pos_embed = make_parameter(full_init((1, self.num_patches + 1, embed_dim), init_method), mesh, Replicate())
        self.pos_drop = nn.Dropout(drop_rate)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens [b, 1 + num_patches, embed_dim] of `images` [b, in_chans, img_size, img_size]."""
        patches = self.proj(self._patches(to_local(images)))
        cls_token = to_local(self.cls_token).expand(patches.shape[0], -1, -1)
        tokens = torch.cat((cls_token.to(patches.dtype), patches), dim=1)
        return self.pos_drop(tokens + to_local(self.pos_embed))

    def _patches(self, images: torch.Tensor) -> torch.Tensor:
        """[b, c, H, W] -> [b, (H/p) * (W/p), c * p * p], patches in row-major order."""
        expected = (self.in_chans, self.img_size, self.img_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"ViT expects images of shape [batch, {expected[0]}, {expected[1]}, {expected[2]}], "
                f"got {tuple(images.shape)}: check img_size and in_chans"
            )
        b, c, p = images.shape[0], self.in_chans, self.patch_size
        grid = self.img_size // p
        patches = images.reshape(b, c, grid, p, grid, p).permute(0, 2, 4, 1, 3, 5)
        return patches.reshape(b, grid * grid, c * p * p)


class VisionTransformer(nn.Module):
    """ViT classifier (LiBai's `VisionTransformer`).

    `forward(images, labels=None)` returns `{"losses": loss}` in training with labels and
    `{"prediction_scores": logits [b, num_classes]}` otherwise.

    Args:
        img_size, patch_size, in_chans: image and patch geometry (MNIST: 28, 4 or 7, 1).
        embed_dim, depth, num_heads, mlp_ratio: transformer sizes.
        drop_rate: dropout on embeddings and block outputs.
        attn_drop_rate: dropout on attention probabilities.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the layers.
        num_classes: classifier outputs.
        loss_func: training loss `loss_func(logits, labels)`; default cross entropy.
    """

    @configurable
    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        num_classes: int = 1000,
        loss_func: Optional[Callable] = None,
    ) -> None:
        super().__init__()
        init_method = init_method_trunc_normal(0.02)
        self.num_classes = num_classes
        self.patch_embed = ViTEmbedding(img_size, patch_size, in_chans, embed_dim, drop_rate, init_method)
        # Stochastic depth grows linearly with depth (later layers are dropped more often).
        drop_path = torch.linspace(0, drop_path_rate, depth).tolist() if depth > 0 else []
        self.blocks = nn.ModuleList(
            [
                TransformerLayer(
                    embed_dim,
                    int(embed_dim * mlp_ratio),
                    num_heads,
                    attention_dropout_prob=attn_drop_rate,
                    output_dropout_prob=drop_rate,
                    drop_path_prob=drop_path[i],
                    layernorm_epsilon=1e-6,
                    init_method=init_method,
                    layer_idx=i,
                )
                for i in range(depth)
            ]
        )
        self.norm = LayerNorm(embed_dim, eps=1e-6, layer_idx=-1)
        self.head = Linear(embed_dim, num_classes, init_method=init_method, layer_idx=-1)
        self.loss_func = nn.CrossEntropyLoss() if loss_func is None else loss_func

    @classmethod
    def from_config(cls, cfg) -> dict:
        """`__init__` arguments read from a LiBai ViT config (configs/common/models/vit/*.py)."""
        return init_kwargs_from_config(cls.__init__, cfg, "VisionTransformer")

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised tokens [b, 1 + num_patches, embed_dim]."""
        hidden_states = self.patch_embed(images)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return self.norm(hidden_states)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits [b, num_classes] from the class token."""
        return self.head(features[:, 0])

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> dict:
        """See the class docstring."""
        logits = self.forward_head(self.forward_features(images))
        if labels is not None and self.training:
            return {"losses": self.loss_func(logits.float(), to_local(labels))}
        return {"prediction_scores": logits}
