"""Swin Transformer V2 (LiBai's `SwinTransformerV2`, arXiv:2111.09883), built from `libai.layers`.

What changes from V1 (`swin_transformer`, whose window helpers, block, stage and classifier
bases this module reuses):

* cosine attention: scores are cos(q, k) times a learned per-head `logit_scale` (kept in
  log space, capped at log(100));
* continuous position bias: a small MLP (`cpb_mlp`, 2 -> 512 -> heads) maps log-spaced
  relative coordinates to each head's bias, squashed to (0, 16) by `16 * sigmoid`; with
  `pretrained_window_size` the coordinates are normalised by the pre-training window, so a
  model transfers to larger windows;
* residual post-norm: `x + norm(attn(x))`, `x + norm(mlp(x))`, with these norms starting at
  zero weight and bias (each block starts as the identity), and `PatchMerging` normalises
  after its reduction (2 * dim);
* q and v biases, no k bias.

Tensor parallelism: heads split over ranks as in V1. `logit_scale`, `q_bias` and `v_bias`
are sharded by heads; `cpb_mlp`'s first Linear is replicated and its second column-parallel
over heads, so each rank computes only its heads' bias (the hidden layer's gradient is
summed over tensor-parallel ranks, as in front of any column-parallel layer).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import Shard

from libai.config import configurable
from libai.layers import LayerNorm, Linear
from libai.layers.utils import full_init, make_parameter, to_local, tp_mesh
from libai.utils.logger import log_ignored_arguments

from .swin_transformer import PatchMerging as PatchMergingV1
from .swin_transformer import (
    Size2,
    SwinBlockBase,
    SwinClassifierBase,
    SwinStage,
    WindowAttentionBase,
    _drop_path_list,
    _log_act_layer,
    to_2tuple,
)
from .utils.weight_init import init_method_trunc_normal

# Hidden width of the continuous position bias MLP (LiBai's and the paper's).
CPB_HIDDEN = 512


def relative_coords_table(window_size: tuple[int, int], pretrained_window_size: tuple[int, int]) -> torch.Tensor:
    """[1, 2Wh - 1, 2Ww - 1, 2] log-spaced relative coordinates, the input of `cpb_mlp`:
    (dh, dw) normalised by the (pre-training) window to [-1, 1], scaled to [-8, 8], then
    `sign(x) * log2(|x| + 1) / log2(8)`."""
    wh, ww = window_size
    dh = torch.arange(-(wh - 1), wh, dtype=torch.float32)
    dw = torch.arange(-(ww - 1), ww, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1)[None]  # [1, 2Wh-1, 2Ww-1, 2]
    reference = pretrained_window_size if pretrained_window_size[0] > 0 else window_size
    table = table / torch.tensor([reference[0] - 1, reference[1] - 1], dtype=torch.float32) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8.0)


class WindowAttention(WindowAttentionBase):
    """Swin V2 window attention: cosine scores with a learned per-head scale and a
    continuous (MLP-made) relative position bias.

    Args:
        dim, window_size, num_heads: width, (height, width) of a window, heads.
        qkv_bias: learn `q_bias` and `v_bias` (k has none).
        attn_drop, proj_drop: dropout on the attention probabilities and on the output.
        pretrained_window_size: window of pre-training ((0, 0): this window).
        fused_bias_add_dropout: LiBai's fused kernel; logged and ignored (same arithmetic).
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, int],
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        pretrained_window_size: Size2 = (0, 0),
        fused_bias_add_dropout: bool = False,
        layer_idx: int = 0,
    ) -> None:
        super().__init__(dim, to_2tuple(window_size), num_heads, False, attn_drop, proj_drop, layer_idx)
        if fused_bias_add_dropout:
            log_ignored_arguments("WindowAttentionV2", "a fused kernel computes the same numbers", fused_bias_add_dropout=True)
        mesh = tp_mesh(layer_idx)
        self.pretrained_window_size = to_2tuple(pretrained_window_size)
        self.logit_scale = make_parameter(full_init((1, num_heads, 1, 1), None, fill=math.log(10.0)), mesh, Shard(1))
        init = init_method_trunc_normal(0.02)
        self.cpb_mlp = nn.Sequential(
            Linear(2, CPB_HIDDEN, bias=True, init_method=init, layer_idx=layer_idx),
            nn.ReLU(inplace=True),
            Linear(CPB_HIDDEN, num_heads, bias=False, parallel="col", init_method=init, layer_idx=layer_idx),
        )
        coords = relative_coords_table(self.window_size, self.pretrained_window_size)
        self.register_buffer("relative_coords_table", coords, persistent=False)
        self.q_bias = self.v_bias = None
        if qkv_bias:
            self.q_bias = make_parameter(full_init((dim,), None), mesh, Shard(0))
            self.v_bias = make_parameter(full_init((dim,), None), mesh, Shard(0))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend within each window of `x` [B * num_windows, N, dim]; `mask` is the shifted
        windows' [num_windows, N, N] additive mask or None."""
        qkv = self.qkv(to_local(x))
        if self.q_bias is not None:
            qkv = qkv + self._qkv_bias()
        q, k, v = self._split_heads(qkv)
        # Cosine attention: the per-head scale goes on q, so the kernel scales by 1.
        logit_scale = torch.clamp(to_local(self.logit_scale), max=math.log(100.0)).exp()  # [1, heads, 1, 1]
        q = F.normalize(q, dim=-1) * logit_scale.to(q.dtype)
        k = F.normalize(k, dim=-1)
        return self._attend(q, k, v, self.position_bias(), mask, scale=1.0)

    def position_bias(self) -> torch.Tensor:
        """This rank's heads' bias [local_heads, N, N], in (0, 16)."""
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.local_heads)  # [positions, heads]
        return 16 * torch.sigmoid(self._gather_bias(table))

    def _qkv_bias(self) -> torch.Tensor:
        """(q_bias, 0, v_bias) of this rank's heads, in qkv's per-head [heads, 3, head_dim] layout."""
        q_bias = to_local(self.q_bias).view(self.local_heads, self.head_dim)
        v_bias = to_local(self.v_bias).view(self.local_heads, self.head_dim)
        return torch.stack((q_bias, torch.zeros_like(q_bias), v_bias), dim=1).flatten()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pretrained_window_size={self.pretrained_window_size}"


class SwinTransformerBlock(SwinBlockBase):
    """Swin V2 block (residual post-norm): `x + norm1(attn(x))`, then `x + norm2(mlp(x))`.

    Args: as V1's block without `qk_scale`, plus `pretrained_window_size` (see
    `WindowAttention`); `act_layer` is logged and ignored unless it is GELU.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable = nn.GELU,
        norm_layer: Callable = LayerNorm,
        pretrained_window_size: int = 0,
        layer_idx: int = 0,
    ) -> None:
        _log_act_layer("SwinTransformerBlockV2", act_layer)

        def make_attention(window: tuple[int, int]) -> WindowAttention:
            return WindowAttention(
                dim, window, num_heads, qkv_bias, attn_drop, drop, to_2tuple(pretrained_window_size), layer_idx=layer_idx
            )

        super().__init__(
            dim, input_resolution, num_heads, window_size, shift_size, mlp_ratio, drop, drop_path, norm_layer,
            layer_idx, make_attention,
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.norm1(self._window_attention(x)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMerging(PatchMergingV1):
    """Swin V2 patch merging: the 2x2 concatenation is reduced to 2 * dim, then normalised."""

    norm_before_reduction = False


class BasicLayer(SwinStage):
    """LiBai's Swin V2 stage: as V1's `BasicLayer` (alternating shifted windows, block `i`
    at `layer_id_offset + i`, the downsampling at the last block's index), with V2 blocks.

    Args: as V1's `BasicLayer` without `qk_scale`, plus `pretrained_window_size`.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Union[float, Sequence[float]] = 0.0,
        norm_layer: Callable = LayerNorm,
        downsample: Optional[Callable] = None,
        pretrained_window_size: int = 0,
        layer_id_offset: int = 0,
    ) -> None:
        drop_paths = _drop_path_list(drop_path, depth)
        blocks = [
            SwinTransformerBlock(
                dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                qkv_bias, drop, attn_drop, drop_paths[i], norm_layer=norm_layer,
                pretrained_window_size=pretrained_window_size, layer_idx=layer_id_offset + i,
            )
            for i in range(depth)
        ]
        merge = None
        if downsample is not None:
            merge = downsample(input_resolution, dim=dim, norm_layer=norm_layer, layer_idx=layer_id_offset + depth - 1)
        super().__init__(blocks, merge)
        self.dim, self.input_resolution, self.layer_id_offset = dim, to_2tuple(input_resolution), layer_id_offset

    @torch.no_grad()
    def _init_respostnorm(self) -> None:
        """Zero the blocks' post-norms (weight and bias), so each block starts as the identity."""
        for block in self.blocks:
            for norm in (block.norm1, block.norm2):
                to_local(norm.weight).zero_()
                to_local(norm.bias).zero_()


class SwinTransformerV2(SwinClassifierBase):
    """Swin Transformer V2 classifier (LiBai's `SwinTransformerV2`).

    Args: as `SwinTransformer` without `qk_scale` and `**kwargs`, plus
    `pretrained_window_sizes` (one per stage; 0: the stage's own window).
    `forward(images, labels=None)` returns `{"losses": loss}` in training with labels,
    else `{"prediction_scores": logits}`.
    """

    patch_merging = PatchMerging

    @configurable
    def __init__(
        self,
        img_size: Size2 = 224,
        patch_size: Size2 = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = [2, 2, 6, 2],  # LiBai's defaults; never mutated
        num_heads: Sequence[int] = [3, 6, 12, 24],
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable = LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        pretrained_window_sizes: Sequence[int] = [0, 0, 0, 0],
        loss_func: Optional[Callable] = None,
    ) -> None:
        super().__init__()
        if len(pretrained_window_sizes) < len(depths):
            raise ValueError(
                f"SwinTransformerV2 needs one pretrained_window_sizes entry per stage: got "
                f"{list(pretrained_window_sizes)} for depths {list(depths)}"
            )
        self.mlp_ratio = mlp_ratio

        def make_stage(i, dim, resolution, drop_paths, downsample, offset) -> BasicLayer:
            return BasicLayer(
                dim, resolution, depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias, drop_rate,
                attn_drop_rate, drop_paths, norm_layer, downsample, pretrained_window_sizes[i], offset,
            )

        self._build(
            img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, drop_rate, drop_path_rate,
            norm_layer, ape, patch_norm, loss_func, make_stage,
        )
        for stage in self.layers:
            stage._init_respostnorm()
