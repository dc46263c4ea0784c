"""Word embeddings split over the vocabulary (`VocabEmbedding`) and replicated ones (`Embedding`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import Replicate, Shard

from libai.utils import distributed as dist

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
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = _normalize_padding_idx(padding_idx, num_embeddings)
        self.amp_enabled = amp_enabled
        self.layer_idx = layer_idx

        # The word embeddings are read again by the LM head on the last pipeline stage,
        # which therefore holds its own replica (see distributed.get_shared_tp_mesh).
        mesh = dist.get_shared_tp_mesh(layer_idx)
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
        self.shared_with_last_stage = dist.get_pipeline_parallel_size() > 1

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
