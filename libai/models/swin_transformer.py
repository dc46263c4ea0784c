"""Swin Transformer (LiBai's `SwinTransformer`), built from `libai.layers`.

Self attention runs inside non-overlapping windows of `window_size x window_size` patch
tokens, with a learned bias per head for each relative position inside a window; every
second block shifts the windows by half a window (a cyclic roll of the feature map), and a
mask keeps tokens that the roll brought together from opposite image borders apart. Between
stages `PatchMerging` halves the resolution and doubles the width.

Tensor parallelism splits the attention heads, as `MultiheadAttention` does: `qkv` is
column-parallel with its output laid out per head (`[heads, 3, head_size]`, so each rank
holds whole heads), `proj` row-parallel; the MLP is LiBai's `MLP`. The relative position
bias table is sharded by heads (`Shard(1)` of `[positions, heads]`): each rank adds only
its own heads' bias, so the table needs no communication forward or backward, and its
shards are slices of the one-process table. (A replicated table would have every rank
compute all heads and sum the gradients over tensor-parallel ranks for nothing.)

Pipeline stages follow LiBai: the patch embedding (with the absolute position embedding
and its dropout, so that they live on the first stage) is layer 0, block `i` (counted over
all stages) is layer `i`, a stage's `PatchMerging` belongs to its last block, and the final
norm and head are layer -1. Set `train.dist.pipeline_num_layers = sum(depths)`.

The window helpers, the block, the stage and the classifier bases are shared with
`swin_transformer_v2`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import Replicate, Shard
from torch.utils.checkpoint import checkpoint

from libai.config import configurable
from libai.layers import MLP, DropPath, LayerNorm, Linear
from libai.layers.utils import check_divisible, full_init, make_parameter, mesh_size, to_local, tp_mesh
from libai.utils.logger import log_ignored_arguments

from .utils.config_args import init_kwargs_from_config
from .utils.weight_init import init_method_trunc_normal

Size2 = Union[int, Sequence[int]]

# LiBai adds -100 (not -inf) to the scores of token pairs that a shifted window must keep apart.
SHIFTED_WINDOW_MASK_VALUE = -100.0


def to_2tuple(value: Size2) -> tuple[int, int]:
    """`(value, value)` for an int, the pair itself for a pair (flowvision's `to_2tuple`)."""
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"expected an int or a pair (height, width), got {value!r}")
    return pair


# --------------------------------------------------------------------------------------
# Window helpers (shared with Swin V2)
# --------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * num_windows, window_size, window_size, C], windows in row-major
    order within each image (H and W must be multiples of window_size)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """The inverse of `window_partition`: [B * num_windows, ws, ws, C] -> [B, H, W, C]."""
    rows, cols = H // window_size, W // window_size
    x = windows.view(-1, rows, cols, window_size, window_size, windows.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, windows.shape[-1])


def relative_position_index(window_size: tuple[int, int]) -> torch.Tensor:
    """[N, N] (N = Wh * Ww) index into a `(2Wh - 1) * (2Ww - 1)` table of relative positions:
    for query (hi, wi) and key (hj, wj), `(hi - hj + Wh - 1) * (2Ww - 1) + (wi - wj + Ww - 1)`."""
    wh, ww = window_size
    rows, cols = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()  # [N] each
    d_row = rows[:, None] - rows[None, :] + (wh - 1)  # [N, N], in 0 .. 2Wh-2
    d_col = cols[:, None] - cols[None, :] + (ww - 1)
    return d_row * (2 * ww - 1) + d_col


def shifted_window_mask(input_resolution: tuple[int, int], window_size: int, shift_size: int) -> torch.Tensor:
    """[num_windows, N, N] additive mask of a shifted-window block: 0 where query and key
    come from the same region of the un-rolled image, -100 where the cyclic shift put them
    in one window from different regions (e.g. opposite borders)."""
    h, w = input_resolution

    def regions(length: int) -> torch.Tensor:
        # Three bands: untouched by the roll, the last full window, the rolled-in strip.
        ids = torch.zeros(length, dtype=torch.long)
        ids[length - window_size : length - shift_size] = 1
        ids[length - shift_size :] = 2
        return ids

    labels = regions(h)[:, None] * 3 + regions(w)[None, :]  # [H, W], 9 regions
    windows = window_partition(labels[None, :, :, None], window_size).view(-1, window_size * window_size)
    apart = windows[:, :, None] != windows[:, None, :]  # [nW, N (query), N (key)]
    return apart.float() * SHIFTED_WINDOW_MASK_VALUE


def fit_window(input_resolution: tuple[int, int], window_size: int, shift_size: int) -> tuple[int, int]:
    """`(window_size, shift_size)` a block uses, as LiBai: one window, unshifted, when the
    feature map is no larger than a window; a clear error when the map cannot be tiled."""
    if min(input_resolution) <= window_size:
        return min(input_resolution), 0
    h, w = input_resolution
    if h % window_size or w % window_size:
        raise ValueError(
            f"Swin feature map {h}x{w} cannot be cut into {window_size}x{window_size} windows (LiBai's "
            f"Swin does not pad): choose img_size / patch_size / window_size so that every stage's "
            f"resolution is a multiple of window_size"
        )
    if not 0 <= shift_size < window_size:
        raise ValueError(f"Swin shift_size ({shift_size}) must be in [0, window_size={window_size})")
    return window_size, shift_size


def _conv_default_init(weight: torch.Tensor) -> torch.Tensor:
    """`nn.Conv2d`'s default weight init (LiBai's patch embedding is a default-initialised
    convolution), applied to the [out, in * p * p] weight of the equivalent `Linear`."""
    return nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------


class WindowAttentionBase(nn.Module):
    """What Swin V1 and V2 window attention share: the tensor-parallel `qkv` (per-head
    layout) and `proj`, and attention over windows with an additive per-head bias and the
    shifted-window mask. Subclasses form q, k, v and the bias."""

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, int],
        num_heads: int,
        qkv_bias: bool,
        attn_drop: float,
        proj_drop: float,
        layer_idx: int,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Swin window attention: dim ({dim}) is not divisible by num_heads ({num_heads})")
        mesh = tp_mesh(layer_idx)
        check_divisible(num_heads, mesh_size(mesh), "Swin WindowAttention num_heads")
        self.dim, self.window_size, self.num_heads = dim, tuple(window_size), num_heads
        self.head_dim = dim // num_heads
        self.layer_idx = layer_idx
        self.attn_drop_prob = attn_drop
        init = init_method_trunc_normal(0.02)
        # Output columns laid out [heads, 3, head_dim]: a column split gives whole heads.
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias, parallel="col", init_method=init, layer_idx=layer_idx)
        self.proj = Linear(dim, dim, parallel="row", init_method=init, layer_idx=layer_idx)
        self.proj_drop = nn.Dropout(proj_drop)
        self.local_heads = num_heads // self.proj.tp_size
        self.head_start = self.proj.tp_rank * self.local_heads
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)

    def _split_heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B_, N, local_heads * 3 * head_dim] -> q, k, v, each [B_, local_heads, N, head_dim]."""
        b, n = qkv.shape[:2]
        qkv = qkv.view(b, n, self.local_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _gather_bias(self, table: torch.Tensor) -> torch.Tensor:
        """[positions, local_heads] table -> [local_heads, N, N] bias of each token pair."""
        n = self.window_size[0] * self.window_size[1]
        return table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, mask: Optional[torch.Tensor], scale: float
    ) -> torch.Tensor:
        """softmax(scale * q k^T + bias + mask) v, then `proj`: [B_, N, dim], replicated over tp.

        `mask` ([num_windows, N, N]) applies to the windows of each image in turn (windows
        are image-major, as `window_partition` orders them)."""
        b_, heads, n, d = q.shape
        if mask is not None:
            windows = mask.shape[0]
            bias = bias[None] + mask[:, None].to(bias.dtype)  # [nW, heads, N, N]
            q, k, v = (t.view(b_ // windows, windows, heads, n, d) for t in (q, k, v))
        bias = bias.to(q.dtype)
        if self.training and self.attn_drop_prob > 0.0:
            context = self._attend_with_dropout(q, k, v, bias, scale)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
        # [.., heads, N, d] -> [B_, N, heads * d]: this rank's slice of dim.
        context = context.reshape(b_, heads, n, d).transpose(1, 2).reshape(b_, n, heads * d)
        return self.proj_drop(self.proj(context))

    def _attend_with_dropout(self, q, k, v, bias, scale: float) -> torch.Tensor:
        """Attention whose dropout noise is drawn for ALL heads, each rank keeping its own
        heads' part, so tensor-parallel ranks drop what one process would."""
        probs = torch.softmax(torch.matmul(q * scale, k.transpose(-1, -2)) + bias, dim=-1)
        noise = torch.rand(*probs.shape[:-3], self.num_heads, *probs.shape[-2:], device=probs.device)
        keep = noise[..., self.head_start : self.head_start + self.local_heads, :, :] >= self.attn_drop_prob
        return torch.matmul(probs * keep / (1.0 - self.attn_drop_prob), v)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class WindowAttention(WindowAttentionBase):
    """Window multi-head self attention with a relative position bias table (Swin V1).

    Args:
        dim: token width.
        window_size: (height, width) of a window.
        num_heads: heads (divisible by the tensor-parallel size).
        qkv_bias: learn biases on q, k, v.
        qk_scale: score scale (default head_dim ** -0.5).
        attn_drop: dropout on the attention probabilities.
        proj_drop: dropout on the output.
        fused_bias_add_dropout: LiBai's fused kernel; logged and ignored (same arithmetic).
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        dim: int,
        window_size: tuple[int, int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused_bias_add_dropout: bool = False,
        layer_idx: int = 0,
    ) -> None:
        super().__init__(dim, to_2tuple(window_size), num_heads, qkv_bias, attn_drop, proj_drop, layer_idx)
        if fused_bias_add_dropout:
            log_ignored_arguments("WindowAttention", "a fused kernel computes the same numbers", fused_bias_add_dropout=True)
        self.scale = qk_scale or self.head_dim**-0.5
        wh, ww = self.window_size
        table = full_init(((2 * wh - 1) * (2 * ww - 1), num_heads), init_method_trunc_normal(0.02))
        self.relative_position_bias_table = make_parameter(table, tp_mesh(layer_idx), Shard(1))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend within each window of `x` [B * num_windows, N, dim]; `mask` is the shifted
        windows' [num_windows, N, N] additive mask or None."""
        q, k, v = self._split_heads(self.qkv(to_local(x)))
        bias = self._gather_bias(to_local(self.relative_position_bias_table))
        return self._attend(q, k, v, bias, mask, self.scale)


# --------------------------------------------------------------------------------------
# Blocks, patch merging, stages
# --------------------------------------------------------------------------------------


class SwinBlockBase(nn.Module):
    """What Swin V1 and V2 blocks share: (shifted) window partition around the attention,
    the MLP, stochastic depth and activation checkpointing. Subclasses order norms and
    residuals (`_forward`)."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        drop: float,
        drop_path: float,
        norm_layer: Callable,
        layer_idx: int,
        make_attention: Callable[[tuple[int, int]], nn.Module],
    ) -> None:
        super().__init__()
        self.dim, self.num_heads, self.mlp_ratio = dim, num_heads, mlp_ratio
        self.input_resolution = to_2tuple(input_resolution)
        self.window_size, self.shift_size = fit_window(self.input_resolution, window_size, shift_size)
        self.layer_idx = layer_idx
        self.norm1 = norm_layer(dim, layer_idx=layer_idx)
        self.attn = make_attention(to_2tuple(self.window_size))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, layer_idx=layer_idx)
        init = init_method_trunc_normal(0.02)
        self.mlp = MLP(dim, int(dim * mlp_ratio), output_dropout_prob=drop, init_method=init, layer_idx=layer_idx)
        mask = shifted_window_mask(self.input_resolution, self.window_size, self.shift_size) if self.shift_size else None
        self.register_buffer("attn_mask", mask, persistent=False)
        # Switched on by `enable_activation_checkpointing` (train.activation_checkpoint).
        self.activation_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens [B, H * W, dim] -> [B, H * W, dim]."""
        x = to_local(x)
        expected = self.input_resolution[0] * self.input_resolution[1]
        if x.dim() != 3 or x.shape[1] != expected:
            raise ValueError(
                f"Swin block expects tokens [batch, {expected}, {self.dim}] (a "
                f"{self.input_resolution[0]}x{self.input_resolution[1]} map), got {tuple(x.shape)}"
            )
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            # Keep only the block's input; backward recomputes the rest (same RNG state).
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention within (shifted) windows of the [B, H * W, C] map."""
        b, _, c = x.shape
        h, w = self.input_resolution
        ws, shift = self.window_size, self.shift_size
        x = x.view(b, h, w, c)
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = self.attn(window_partition(x, ws).view(-1, ws * ws, c), self.attn_mask)
        x = window_reverse(windows.view(-1, ws, ws, c), ws, h, w)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x.reshape(b, h * w, c)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
            f"window_size={self.window_size}, shift_size={self.shift_size}"
        )


class SwinTransformerBlock(SwinBlockBase):
    """Swin V1 block (pre-norm): `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.

    Args:
        dim, input_resolution, num_heads: width, (H, W) of the token map, heads.
        window_size, shift_size: window side and shift (0: plain windows).
        mlp_ratio: MLP hidden width / dim.
        qkv_bias, qk_scale, drop, attn_drop: see `WindowAttention`.
        drop_path: stochastic depth probability.
        act_layer: LiBai's argument; the MLP is GELU (another value is logged and ignored).
        norm_layer: norm class, called `norm_layer(dim, layer_idx=...)`.
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
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
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable = nn.GELU,
        norm_layer: Callable = LayerNorm,
        layer_idx: int = 0,
    ) -> None:
        _log_act_layer(type(self).__name__, act_layer)

        def make_attention(window: tuple[int, int]) -> WindowAttention:
            return WindowAttention(dim, window, num_heads, qkv_bias, qk_scale, attn_drop, drop, layer_idx=layer_idx)

        super().__init__(
            dim, input_resolution, num_heads, window_size, shift_size, mlp_ratio, drop, drop_path, norm_layer,
            layer_idx, make_attention,
        )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._window_attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _log_act_layer(owner: str, act_layer: Callable) -> None:
    if act_layer is not nn.GELU:
        log_ignored_arguments(owner, "the MLP is libai.layers.MLP with GELU, as in LiBai", act_layer=act_layer)


class PatchMerging(nn.Module):
    """Halve the token map and double the width: each 2x2 neighbourhood's tokens are
    concatenated (4 * dim), normalised and projected to 2 * dim (Swin V1 order).

    Args:
        input_resolution: (H, W) of the token map (both even).
        dim: input width.
        norm_layer: norm class, called `norm_layer(size, layer_idx=...)`.
        layer_idx: index of the layer that owns it (LiBai: the stage's last block's).
    """

    # Swin V1 normalises the concatenation (4 * dim) before the reduction; V2 after (2 * dim).
    norm_before_reduction = True

    def __init__(
        self, input_resolution: tuple[int, int], dim: int, norm_layer: Callable = LayerNorm, layer_idx: int = 0
    ) -> None:
        super().__init__()
        self.input_resolution = to_2tuple(input_resolution)
        if self.input_resolution[0] % 2 or self.input_resolution[1] % 2:
            raise ValueError(f"PatchMerging needs an even token map, got {self.input_resolution}: change img_size or patch_size")
        self.dim = dim
        self.layer_idx = layer_idx
        self.reduction = Linear(4 * dim, 2 * dim, bias=False, init_method=init_method_trunc_normal(0.02), layer_idx=layer_idx)
        self.norm = norm_layer(4 * dim if self.norm_before_reduction else 2 * dim, layer_idx=layer_idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H * W, dim] -> [B, H/2 * W/2, 2 * dim]."""
        x = self._merge(to_local(x))
        if self.norm_before_reduction:
            return self.reduction(self.norm(x))
        return self.norm(self.reduction(x))

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H * W, C] -> [B, H/2 * W/2, 4C]: the 2x2 neighbours in LiBai's order
        (top-left, bottom-left, top-right, bottom-right)."""
        b, _, c = x.shape
        h, w = self.input_resolution
        x = x.view(b, h, w, c)
        parts = (x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2])
        return torch.cat(parts, dim=-1).view(b, -1, 4 * c)

    def extra_repr(self) -> str:
        return f"input_resolution={self.input_resolution}, dim={self.dim}"


class SwinStage(nn.Module):
    """A resolution stage: blocks, then an optional downsampling. It has no `layer_idx` of
    its own, so each block (and the merging) is a unit of pipeline placement."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: Optional[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample
        self.depth = len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks then the downsampling."""
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


def _drop_path_list(drop_path: Union[float, Sequence[float]], depth: int) -> list[float]:
    return list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth


class BasicLayer(SwinStage):
    """LiBai's Swin V1 stage: `depth` blocks alternating plain and shifted windows
    (shift = window_size // 2), block `i` at `layer_idx = layer_id_offset + i`, then
    `downsample(input_resolution, dim=dim, norm_layer=..., layer_idx=<last block's>)`.

    Args: as `SwinTransformerBlock`, plus `depth`, `drop_path` (one value or one per block),
    `downsample` (a class such as `PatchMerging`, or None) and `layer_id_offset`.
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
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Union[float, Sequence[float]] = 0.0,
        norm_layer: Callable = LayerNorm,
        downsample: Optional[Callable] = None,
        layer_id_offset: int = 0,
    ) -> None:
        drop_paths = _drop_path_list(drop_path, depth)
        blocks = [
            SwinTransformerBlock(
                dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                qkv_bias, qk_scale, drop, attn_drop, drop_paths[i], norm_layer=norm_layer,
                layer_idx=layer_id_offset + i,
            )
            for i in range(depth)
        ]
        merge = None
        if downsample is not None:
            merge = downsample(input_resolution, dim=dim, norm_layer=norm_layer, layer_idx=layer_id_offset + depth - 1)
        super().__init__(blocks, merge)
        self.dim, self.input_resolution, self.layer_id_offset = dim, to_2tuple(input_resolution), layer_id_offset


# --------------------------------------------------------------------------------------
# Patch embedding and the classifier
# --------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Images [B, C, H, W] -> patch tokens [B, (H/p) * (W/p), embed_dim]: a `Linear` over each
    flattened patch (the same map as LiBai's stride-p convolution; features ordered (channel,
    row, column) as a conv weight flattens), an optional norm, the optional absolute
    position embedding and the embedding dropout.

    The position embedding and dropout live here (LiBai keeps them on the model) so that the
    whole embedding is layer 0, on the first pipeline stage.

    Args:
        img_size, patch_size: image and patch (height, width), or one int for both.
        in_chans, embed_dim: image channels and token width.
        norm_layer: norm after the projection, or None.
        layer_idx: pipeline layer (0).
        ape: learn an absolute position embedding `absolute_pos_embed` [1, patches, embed_dim].
        drop_rate: dropout after the embedding.
    """

    def __init__(
        self,
        img_size: Size2 = 224,
        patch_size: Size2 = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Optional[Callable] = None,
        layer_idx: int = 0,
        *,
        ape: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.img_size, self.patch_size = to_2tuple(img_size), to_2tuple(patch_size)
        if self.img_size[0] % self.patch_size[0] or self.img_size[1] % self.patch_size[1]:
            raise ValueError(f"Swin img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        self.patches_resolution = [self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1]]
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.layer_idx = layer_idx
        patch_features = in_chans * self.patch_size[0] * self.patch_size[1]
        self.proj = Linear(patch_features, embed_dim, init_method=_conv_default_init, layer_idx=layer_idx)
        self.norm = norm_layer(embed_dim, layer_idx=layer_idx) if norm_layer is not None else None
        self.absolute_pos_embed = None
        if ape:
            embed = full_init((1, self.num_patches, embed_dim), init_method_trunc_normal(0.02))
            self.absolute_pos_embed = make_parameter(embed, tp_mesh(layer_idx), Replicate())
        self.pos_drop = nn.Dropout(drop_rate)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens [B, num_patches, embed_dim] of `images` [B, in_chans, *img_size]."""
        x = self.proj(self._patches(to_local(images)))
        if self.norm is not None:
            x = self.norm(x)
        if self.absolute_pos_embed is not None:
            x = x + to_local(self.absolute_pos_embed)
        return self.pos_drop(x)

    def _patches(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, (H/ph) * (W/pw), C * ph * pw], patches in row-major order."""
        expected = (self.in_chans, *self.img_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"Swin expects images of shape [batch, {expected[0]}, {expected[1]}, {expected[2]}], "
                f"got {tuple(images.shape)}: check img_size and in_chans"
            )
        (ph, pw), (gh, gw) = self.patch_size, self.patches_resolution
        patches = images.reshape(images.shape[0], self.in_chans, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
        return patches.reshape(images.shape[0], gh * gw, self.in_chans * ph * pw)


class SwinClassifierBase(nn.Module):
    """The classifier around Swin V1 / V2 stages: patch embedding, stages, final norm,
    average over tokens, head and loss. `forward(images, labels=None)` returns
    `{"losses": loss}` in training with labels, else `{"prediction_scores": logits}`."""

    # The downsampling between stages (V2 has its own).
    patch_merging: type = PatchMerging

    def _build(
        self,
        img_size: Size2,
        patch_size: Size2,
        in_chans: int,
        num_classes: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        drop_rate: float,
        drop_path_rate: float,
        norm_layer: Callable,
        ape: bool,
        patch_norm: bool,
        loss_func: Optional[Callable],
        make_stage: Callable[..., nn.Module],
    ) -> None:
        """Build every part; `make_stage(i, dim, resolution, drop_paths, downsample,
        layer_id_offset)` builds stage `i` (V1's or V2's `BasicLayer`; `downsample` is
        `patch_merging`, or None after the last stage)."""
        if len(num_heads) != len(depths):
            raise ValueError(f"Swin depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim, self.ape, self.patch_norm = embed_dim, ape, patch_norm
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.patch_embed = PatchEmbed(
            img_size, patch_size, in_chans, embed_dim, norm_layer if patch_norm else None, layer_idx=0,
            ape=ape, drop_rate=drop_rate,
        )
        self.patches_resolution = self.patch_embed.patches_resolution
        # Stochastic depth rises linearly over all blocks of all stages.
        total = sum(depths)
        rates = torch.linspace(0, drop_path_rate, total).tolist() if total else []
        stages, offset = [], 0
        for i, depth in enumerate(depths):
            resolution = (self.patches_resolution[0] // 2**i, self.patches_resolution[1] // 2**i)
            downsample = self.patch_merging if i < self.num_layers - 1 else None
            stages.append(make_stage(i, int(embed_dim * 2**i), resolution, rates[offset : offset + depth], downsample, offset))
            offset += depth
        self.layers = nn.ModuleList(stages)
        self.norm = norm_layer(self.num_features, layer_idx=-1)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        if num_classes > 0:
            self.head = Linear(self.num_features, num_classes, init_method=init_method_trunc_normal(0.02), layer_idx=-1)
        else:
            self.head = nn.Identity()
        self.loss_func = nn.CrossEntropyLoss() if loss_func is None else loss_func

    @classmethod
    def from_config(cls, cfg) -> dict:
        """`__init__` arguments read from a LiBai config (configs/common/models/swin*/*.py)."""
        return init_kwargs_from_config(cls.__init__, cfg, cls.__name__)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, num_features]."""
        x = self.patch_embed(images)
        for stage in self.layers:
            x = stage(x)
        x = self.norm(x)  # [B, L, C]
        return self.avgpool(x.transpose(1, 2)).flatten(1)

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> dict:
        """See the class docstring."""
        logits = self.head(self.forward_features(images))
        if labels is not None and self.training:
            return {"losses": self.loss_func(logits.float(), to_local(labels))}
        return {"prediction_scores": logits}


class SwinTransformer(SwinClassifierBase):
    """Swin Transformer classifier (LiBai's `SwinTransformer`, arXiv:2103.14030).

    Args:
        img_size, patch_size, in_chans: image geometry (int or (H, W)).
        num_classes: head outputs (0: no head, the pooled features are returned).
        embed_dim: width of the first stage (doubled by each PatchMerging).
        depths, num_heads: blocks and heads per stage.
        window_size: window side (every stage's token map must be a multiple of it, or
            no larger than it, as in LiBai, which does not pad).
        mlp_ratio, qkv_bias, qk_scale: block settings.
        drop_rate, attn_drop_rate, drop_path_rate: dropouts and stochastic depth (rising
            linearly over all blocks).
        norm_layer: norm class, called `norm_layer(size, layer_idx=...)`.
        ape: absolute position embedding (`patch_embed.absolute_pos_embed`).
        patch_norm: norm after the patch embedding.
        loss_func: training loss `loss_func(logits, labels)`; default cross entropy.
        **kwargs: accepted as LiBai does; each is logged by name and ignored.
    """

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
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable = LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        loss_func: Optional[Callable] = None,
        **kwargs,
    ) -> None:
        super().__init__()
        log_ignored_arguments("SwinTransformer", "LiBai's SwinTransformer does not use them either", **kwargs)
        self.mlp_ratio = mlp_ratio

        def make_stage(i, dim, resolution, drop_paths, downsample, offset) -> BasicLayer:
            return BasicLayer(
                dim, resolution, depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                attn_drop_rate, drop_paths, norm_layer, downsample, offset,
            )

        self._build(
            img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, drop_rate, drop_path_rate,
            norm_layer, ape, patch_norm, loss_func, make_stage,
        )
