"""Word embeddings split over the vocabulary (`VocabEmbedding`), replicated ones (`Embedding`),
the token + position input embedding of GPT-2 and T5 (`TokenPositionEmbedding`), fixed
sinusoidal positions (`SinePositionalEmbedding`), and the image patch embedding of vision
models (`PatchEmbedding`)."""
from __future__ import annotations

import inspect
import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import Replicate, Shard

from libai.utils import distributed as dist
from libai.utils.logger import log_ignored_arguments

from .utils import InitMethod, check_divisible, full_init, make_parameter, mesh_rank, mesh_size, to_local, tp_mesh


def _normalize_padding_idx(padding_idx: Optional[int], num_embeddings: int) -> Optional[int]:
    """A non-negative padding index (negative ones count from the end, as in torch)."""
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"padding_idx ({padding_idx}) must be within num_embeddings ({num_embeddings})")
    return padding_idx % num_embeddings


def _repr(module) -> str:
    return (
        f"num_embeddings={module.num_embeddings}, embedding_dim={module.embedding_dim}, "
        f"padding_idx={module.padding_idx}"
    )


def _full_weight(num_embeddings: int, embedding_dim: int, init_method: InitMethod, padding_idx: Optional[int]):
    weight = full_init((num_embeddings, embedding_dim), init_method)
    if padding_idx is not None:
        # As torch.nn.Embedding: the padding row starts at zero (after the same RNG draws).
        weight[padding_idx].zero_()
    return weight


class Embedding(nn.Module):
    """A lookup table replicated on every rank, for position and token-type embeddings.

    Args:
        num_embeddings: number of rows.
        embedding_dim: size of each row.
        padding_idx: row that starts at zero and receives no gradient (as in torch).
        init_method: initialiser of the full weight.
        amp_enabled: accepted for LiBai compatibility; autocast decides the compute dtype.
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: Optional[int] = None,
        init_method: InitMethod = nn.init.xavier_normal_,
        amp_enabled: bool = False,
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = _normalize_padding_idx(padding_idx, num_embeddings)
        self.amp_enabled = amp_enabled
        if amp_enabled:
            log_ignored_arguments(type(self).__name__, "torch.autocast decides the compute dtype", amp_enabled=True)
        self.layer_idx = layer_idx
        full = _full_weight(num_embeddings, embedding_dim, init_method, self.padding_idx)
        self.weight = make_parameter(full, tp_mesh(layer_idx), Replicate())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Rows of the table for `input_ids` (any shape); output shape `ids.shape + (dim,)`."""
        return F.embedding(to_local(input_ids), to_local(self.weight), self.padding_idx)

    def extra_repr(self) -> str:
        return _repr(self)


class VocabEmbedding(nn.Module):
    """Word embeddings whose vocabulary rows are split over tensor-parallel ranks (Megatron).

    Each rank looks up the ids that fall in its row range, writes zeros for the others, and
    the partial results are summed over tensor-parallel ranks, so every rank ends with the
    full embeddings. The weight is the one `LMLogits` ties to.

    Args:
        num_embeddings: vocabulary size (must divide by the tensor-parallel size).
        embedding_dim: size of each row.
        padding_idx: row that starts at zero and receives no gradient (as in torch).
        init_method: initialiser of the full weight.
        amp_enabled: accepted for LiBai compatibility; autocast decides the compute dtype.
        tied_to_lm_head: an LM head on the last pipeline stage reads this weight (LiBai's
            GPT, BERT, T5), so that stage keeps a replica; False for a model with its own
            head (Llama), whose last stage then holds nothing of it.
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: Optional[int] = None,
        init_method: InitMethod = nn.init.normal_,
        amp_enabled: bool = False,
        *,
        tied_to_lm_head: bool = True,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = _normalize_padding_idx(padding_idx, num_embeddings)
        self.amp_enabled = amp_enabled
        if amp_enabled:
            log_ignored_arguments(type(self).__name__, "torch.autocast decides the compute dtype", amp_enabled=True)
        self.layer_idx = layer_idx

        # Tied word embeddings are read again by the LM head on the last pipeline stage,
        # which therefore holds its own replica (see distributed.get_shared_tp_mesh).
        mesh = dist.get_shared_tp_mesh(layer_idx) if tied_to_lm_head else dist.get_layer_tp_mesh(layer_idx)
        self.tp_size = mesh_size(mesh)
        check_divisible(num_embeddings, self.tp_size, "VocabEmbedding num_embeddings (vocabulary size)")
        rows = num_embeddings // self.tp_size
        self.vocab_start = mesh_rank(mesh) * rows
        self.vocab_end = self.vocab_start + rows
        self.local_padding_idx = None
        if self.padding_idx is not None and self.vocab_start <= self.padding_idx < self.vocab_end:
            self.local_padding_idx = self.padding_idx - self.vocab_start

        full = _full_weight(num_embeddings, embedding_dim, init_method, self.padding_idx)
        self.weight = make_parameter(full, mesh, Shard(0))
        # Read by libai.engine.pipeline: this weight is trained on its own stage and on
        # the last one (flags live on the module: `module.to()` may replace parameters).
        self.shared_with_last_stage = tied_to_lm_head and dist.get_pipeline_parallel_size() > 1

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full embeddings of `input_ids`, replicated over tensor-parallel ranks."""
        input_ids = to_local(input_ids)
        weight = to_local(self.weight)
        if self.tp_size == 1:
            return F.embedding(input_ids, weight, self.padding_idx)
        outside = (input_ids < self.vocab_start) | (input_ids >= self.vocab_end)
        # Ids owned by another rank look up local row 0 and are zeroed, which also keeps
        # their gradient away from that row.
        local_ids = (input_ids - self.vocab_start).masked_fill(outside, 0)
        embeds = F.embedding(local_ids, weight, self.local_padding_idx)
        embeds = embeds.masked_fill(outside.unsqueeze(-1), 0.0)
        return dist.reduce_from_tensor_parallel_region(embeds)

    def extra_repr(self) -> str:
        return _repr(self)


class TokenPositionEmbedding(nn.Module):
    """Token embeddings split over the vocabulary plus learned absolute position embeddings,
    summed, then dropout: the input embedding of GPT-2 and of LiBai's T5 (whose encoder
    and decoder share one instance).

    LiBai's checkpoints name the token table after the model
    (`GPT_model.embeddings.token_embeddings`, `t5_model.embedding.word_embeddings`), so it
    is registered under `token_table`; checkpoints, Hugging Face name maps and tied LM
    heads find it by that name (or as `tokens`).

    Args:
        vocab_size: vocabulary size (must divide by the tensor-parallel size).
        hidden_size: embedding size.
        max_positions: number of positions.
        init_method: initialiser of both tables.
        dropout_prob: dropout on the sum.
        amp_enabled: accepted for LiBai compatibility (autocast picks the dtype).
        token_table: the token table's attribute (and checkpoint) name.
        max_positions_key: the config key that sets `max_positions`, named in the error
            for a too-long input.
        tied_to_lm_head: see `VocabEmbedding` (False for a model with its own output head).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_positions: int,
        init_method: InitMethod = nn.init.xavier_normal_,
        dropout_prob: float = 0.0,
        amp_enabled: bool = False,
        *,
        token_table: str = "word_embeddings",
        max_positions_key: str = "max_positions",
        tied_to_lm_head: bool = True,
    ) -> None:
        super().__init__()
        if token_table in ("position_embeddings", "dropout"):
            raise ValueError(f"token_table {token_table!r} is the name of another submodule; choose another name")
        self.max_positions = max_positions
        self.max_positions_key = max_positions_key
        self.token_table = token_table
        # The token table is made first: the order of the RNG draws is LiBai's.
        tokens = VocabEmbedding(
            vocab_size, hidden_size, init_method=init_method, amp_enabled=amp_enabled, tied_to_lm_head=tied_to_lm_head, layer_idx=0
        )
        self.add_module(token_table, tokens)
        self.position_embeddings = Embedding(
            max_positions, hidden_size, init_method=init_method, amp_enabled=amp_enabled, layer_idx=0
        )
        self.dropout = nn.Dropout(dropout_prob)

    @property
    def tokens(self) -> VocabEmbedding:
        """The token table, whatever `token_table` named it."""
        return getattr(self, self.token_table)

    def forward(
        self, input_ids: torch.Tensor, past_length: int = 0, position_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Embeddings [b, s, hidden] of `input_ids` [b, s] at `position_ids` [b, s] (default:
        positions past_length .. past_length+s-1)."""
        input_ids = to_local(input_ids)
        end = past_length + input_ids.shape[-1]
        if end > self.max_positions:
            key = self.max_positions_key
            raise ValueError(
                f"input reaches position {end} but {key} is {self.max_positions}: shorten the sequence or raise {key}"
            )
        if position_ids is None:
            position_ids = torch.arange(past_length, end, device=input_ids.device)
        return self.dropout(self.tokens(input_ids) + self.position_embeddings(to_local(position_ids)))


class SinePositionalEmbedding(nn.Module):
    """The fixed sinusoidal position table of "Attention Is All You Need" (LiBai's signature).

    Row ``p`` holds ``sin(p / 10000^(2i/d))`` in column ``2i`` and ``cos(...)`` in column
    ``2i+1``. The table is a buffer (not trained, not saved in checkpoints) computed in
    float32 on every rank, so it needs no placement.

    Args:
        num_embeddings: number of positions.
        embedding_dim: width of each position's vector (even or odd).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        position = torch.arange(num_embeddings, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, embedding_dim, 2, dtype=torch.float32) * (-math.log(10000.0) / embedding_dim))
        table = torch.zeros(num_embeddings, embedding_dim)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: embedding_dim // 2])
        self.register_buffer("position_embedding", table, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Rows of the table for `position_ids` (any shape); output shape `ids.shape + (dim,)`."""
        return F.embedding(to_local(position_ids), self.position_embedding)

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}"


Size2D = Union[int, tuple[int, int]]


def _pair(size: Size2D) -> tuple[int, int]:
    """(height, width) of an int or a 2-tuple."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _conv2d_default_init(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Fill `weight` and `bias` as `torch.nn.Conv2d` does (LiBai's patch projection is a plain
    Conv2d, which its models leave with this initialisation)."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    fan_in = weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(bias, -bound, bound)


def _build_norm(norm_layer: Optional[Callable[..., nn.Module]], dim: int, layer_idx: int) -> nn.Module:
    """`norm_layer(dim)` (on the owner's stage when it takes `layer_idx`, as libai.layers do);
    `nn.Identity()` when there is none."""
    if norm_layer is None:
        return nn.Identity()
    try:
        takes_layer_idx = "layer_idx" in inspect.signature(norm_layer).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        takes_layer_idx = False
    return norm_layer(dim, layer_idx=layer_idx) if takes_layer_idx else norm_layer(dim)


class _PatchProjection(nn.Module):
    """`torch.nn.Conv2d(in_chans, embed_dim, kernel_size=patch, stride=patch)` with its weight
    and bias replicated over the tensor-parallel ranks of `layer_idx`'s stage."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: tuple[int, int], layer_idx: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        weight = torch.empty((embed_dim, in_chans, *patch_size), device=dist.get_device())
        bias = torch.empty((embed_dim,), device=dist.get_device())
        with torch.no_grad():
            _conv2d_default_init(weight, bias)
        mesh = tp_mesh(layer_idx)
        self.weight = make_parameter(weight, mesh, Replicate())
        self.bias = make_parameter(bias, mesh, Replicate())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, embed_dim, H / ph, W / pw]."""
        return F.conv2d(images, to_local(self.weight), to_local(self.bias), stride=self.patch_size)


class PatchEmbedding(nn.Module):
    """Images [B, C, H, W] -> patch tokens [B, N, embed_dim] (LiBai's `PatchEmbedding`).

    A convolution with kernel = stride = `patch_size` projects each non-overlapping patch;
    the grid of patches is flattened row-major to N = (H / ph) * (W / pw) tokens (or kept as
    [B, embed_dim, H / ph, W / pw] with `flatten=False`), then `norm_layer` runs. The
    projection is replicated over tensor-parallel ranks on the stage of `layer_idx`.

    Args:
        img_size: image size, an int or (height, width).
        patch_size: patch size, an int or (height, width); a remainder of the image that
            does not fill a patch is dropped, as by the strided convolution.
        in_chans: image channels.
        embed_dim: size of each patch token.
        norm_layer: a class or function `norm_layer(embed_dim)` applied to the tokens (given
            `layer_idx` too when it takes one, e.g. `libai.layers.LayerNorm`); None: no norm.
        flatten: return tokens [B, N, embed_dim]; False keeps [B, embed_dim, H', W'].
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        img_size: Size2D = 224,
        patch_size: Size2D = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
        flatten: bool = True,
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        if min(self.patch_size) < 1 or min(self.grid_size) < 1:
            raise ValueError(
                f"PatchEmbedding patch_size {self.patch_size} does not fit img_size {self.img_size}: "
                f"each patch side must be between 1 and the image side"
            )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.flatten = flatten
        self.layer_idx = layer_idx

        # Named `proj` with `weight` and `bias`, as LiBai's Conv2d, so its checkpoints' keys match.
        self.proj = _PatchProjection(in_chans, embed_dim, self.patch_size, layer_idx)
        self.norm = _build_norm(norm_layer, embed_dim, layer_idx)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, embed_dim] (or [B, embed_dim, H', W']) of `images` [B, C, H, W]."""
        images = to_local(images)
        self._check_shape(images)
        patches = self.proj(images)
        if self.flatten:
            patches = patches.flatten(2).transpose(1, 2)  # [B, C, H', W'] -> [B, N, C]
        return self.norm(patches)

    def _check_shape(self, images: torch.Tensor) -> None:
        expected = (self.in_chans, *self.img_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"PatchEmbedding expects images of shape [batch, {expected[0]}, {expected[1]}, {expected[2]}], "
                f"got {tuple(images.shape)}: resize the images or set img_size and in_chans to match"
            )

    def extra_repr(self) -> str:
        return (
            f"img_size={self.img_size}, patch_size={self.patch_size}, in_chans={self.in_chans}, "
            f"embed_dim={self.embed_dim}, flatten={self.flatten}"
        )
