"""ResMLP (Touvron et al., "ResMLP: Feedforward networks for image classification with
data-efficient training", arXiv:2105.03404) in LiBai's form, built from `libai.layers`.

Patch tokens pass through residual blocks that each mix information twice: a linear map
across patches (the same for every channel, where a transformer would use attention) and an
MLP across channels. Instead of layer norms the blocks use `Affine` (a learned per-channel
scale and shift), and each residual branch is scaled by a learned per-channel LayerScale
(`gamma_1`, `gamma_2`, starting at `init_scale`). The classifier reads the mean of the
patch tokens.

Parameter names are LiBai's (`patch_embed.proj`, `blocks.i.norm1.alpha`, `blocks.i.attn`,
`blocks.i.gamma_1`, `norm`, `head`, ...), so LiBai's optimizer overrides (no weight decay
on `alpha`, `beta`, `gamma_1`, `gamma_2`) and checkpoints' keys apply as they are.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.distributed.tensor import Replicate
from torch.utils.checkpoint import checkpoint

from libai.config import configurable
from libai.layers import MLP, DropPath, Linear, PatchEmbedding
from libai.layers.utils import full_init, make_parameter, to_local, tp_mesh

from .utils.config_args import init_kwargs_from_config
from .utils.weight_init import init_method_trunc_normal


def _replicated_vector(dim: int, value: float, layer_idx: int) -> nn.Parameter:
    """A [dim] parameter filled with `value`, replicated on `layer_idx`'s stage."""
    return make_parameter(full_init((dim,), None, fill=value), tp_mesh(layer_idx), Replicate())


class Affine(nn.Module):
    """`alpha * x + beta` over the last dim: ResMLP's replacement for a layer norm (no
    statistics, only a learned per-channel scale, starting at 1, and shift, at 0).

    Args:
        dim: size of the last dim.
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(self, dim: int, *, layer_idx: int = 0) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.alpha = _replicated_vector(dim, 1.0, layer_idx)
        self.beta = _replicated_vector(dim, 0.0, layer_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`alpha * x + beta`, same shape as `x`."""
        return to_local(self.alpha) * to_local(x) + to_local(self.beta)

    def extra_repr(self) -> str:
        return f"dim={self.alpha.shape[0]}"


class ResMLPBlock(nn.Module):
    """One ResMLP block (LiBai's `layers_scale_mlp_blocks`) on tokens [B, N, dim]:

        x = x + drop_path(gamma_1 * cross_patch(affine_1(x)))   # linear over the N patches
        x = x + drop_path(gamma_2 * mlp(affine_2(x)))           # MLP over the dim channels

    The cross-patch linear (`attn`, N x N) is replicated; the channel MLP (`dim -> 4 dim ->
    dim`) is column- then row-parallel over tensor-parallel ranks.

    Args:
        dim: token size.
        drop: dropout on the channel MLP's output. (LiBai accepts it but never applies it;
            the original ResMLP does: here it is applied. Its default, 0, is the same.)
        drop_path: stochastic depth probability of both residual branches.
        init_values: starting value of the LayerScale vectors `gamma_1`, `gamma_2`.
        num_patches: number of tokens N.
        init_method: initialiser of the linear layers' weights (biases start at zero).
        layer_idx: index of the layer, which picks its pipeline stage.
    """

    def __init__(
        self,
        dim: int,
        drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float = 1e-4,
        num_patches: int = 196,
        init_method: Callable = init_method_trunc_normal(0.02),
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.norm1 = Affine(dim, layer_idx=layer_idx)
        # Named `attn` as in LiBai and the paper's code: it takes attention's place.
        self.attn = Linear(num_patches, num_patches, init_method=init_method, layer_idx=layer_idx)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = Affine(dim, layer_idx=layer_idx)
        self.mlp = MLP(
            hidden_size=dim,
            ffn_hidden_size=int(4.0 * dim),
            output_dropout_prob=drop,
            init_method=init_method,
            output_layer_init_method=init_method,
            layer_idx=layer_idx,
        )
        self.gamma_1 = _replicated_vector(dim, init_values, layer_idx)
        self.gamma_2 = _replicated_vector(dim, init_values, layer_idx)
        # Switched on by `enable_activation_checkpointing` (train.activation_checkpoint).
        self.activation_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, N, dim] -> [B, N, dim]."""
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            # Keep only the block's input; backward recomputes the rest (same RNG state).
            return checkpoint(self._forward, to_local(x), use_reentrant=False)
        return self._forward(to_local(x))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        cross_patch = self.attn(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # mixes the N tokens
        x = x + self.drop_path(to_local(self.gamma_1) * cross_patch)
        return x + self.drop_path(to_local(self.gamma_2) * self.mlp(self.norm2(x)))


class ResMLP(nn.Module):
    """ResMLP image classifier (LiBai's `ResMLP`).

    `forward(images, labels=None)` returns `{"losses": loss}` in training with labels and
    `{"prediction_scores": logits [B, num_classes]}` otherwise (logits [B, embed_dim] with
    `num_classes=0`, which leaves out the head).

    Pipeline stages: the patch embedding is layer 0, block i is layer i, the final `norm`
    and `head` are the last layer (-1), as LiBai's `set_pipeline_stage_id` places them; so
    `train.dist.pipeline_num_layers` is `depth`.

    Args:
        img_size, patch_size, in_chans: image and patch geometry (see `PatchEmbedding`).
        embed_dim: token size.
        depth: number of blocks.
        drop_rate: dropout on each block's channel-MLP output (see `ResMLPBlock`).
        drop_path_rate: stochastic depth probability, the same for every block (as LiBai
            and the original ResMLP; ViT's rises with depth instead).
        init_scale: starting value of the LayerScale vectors.
        num_classes: classifier outputs; 0 leaves out the head.
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
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_scale: float = 1e-4,
        num_classes: int = 1000,
        loss_func: Optional[Callable] = None,
    ) -> None:
        super().__init__()
        init_method = init_method_trunc_normal(0.02)  # LiBai's _init_weights for every Linear
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.patch_embed = PatchEmbedding(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, layer_idx=0
        )
        num_patches = self.patch_embed.num_patches
        self.blocks = nn.ModuleList(
            [
                ResMLPBlock(
                    embed_dim,
                    drop=drop_rate,
                    drop_path=drop_path_rate,
                    init_values=init_scale,
                    num_patches=num_patches,
                    init_method=init_method,
                    layer_idx=i,
                )
                for i in range(depth)
            ]
        )
        self.norm = Affine(embed_dim, layer_idx=-1)
        self.head = (
            Linear(embed_dim, num_classes, init_method=init_method, layer_idx=-1) if num_classes > 0 else nn.Identity()
        )
        self.loss_func = nn.CrossEntropyLoss() if loss_func is None else loss_func

    @classmethod
    def from_config(cls, cfg) -> dict:
        """`__init__` arguments read from a LiBai ResMLP config (configs/common/models/resmlp/*.py)."""
        return init_kwargs_from_config(cls.__init__, cfg, "ResMLP")

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, embed_dim] after the last block."""
        hidden_states = self.patch_embed(images)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return hidden_states

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits [B, num_classes] from the mean of the normalised patch tokens."""
        return self.head(self.norm(features).mean(dim=1))

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> dict:
        """See the class docstring."""
        logits = self.forward_head(self.forward_features(images))
        if labels is not None and self.training:
            return {"losses": self.loss_func(logits.float(), to_local(labels))}
        return {"prediction_scores": logits}
