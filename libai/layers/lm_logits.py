"""Language-model head tied to the vocabulary-parallel word embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, Shard

from libai.utils import distributed as dist

from .utils import check_divisible, full_init, make_parameter, mesh_rank, mesh_size, to_local, tp_mesh


class LMLogits(nn.Module):
    """`logits = hidden @ word_embeddings^T (+ bias)`, for this rank's slice of the vocabulary.

    Called as `lm_head(hidden, word_embeddings.weight)` with the `VocabEmbedding`'s
    (vocabulary-split) parameter, so input and output embeddings are the same Parameter and
    its gradient gathers both uses. The result holds this rank's vocabulary shard on the last
    dim, which `ParallelCrossEntropyLoss` consumes without gathering the full vocabulary.

    Args:
        vocab_size: vocabulary size (must divide by the tensor-parallel size).
        bias: learn a vocabulary-split output bias (zeros at start).
    """

    def __init__(self, vocab_size: int, bias: bool = False) -> None:
        super().__init__()
        # LiBai places the head with the last layer.
        mesh = tp_mesh(-1)
        self.vocab_size = vocab_size
        self.tp_size = mesh_size(mesh)
        check_divisible(vocab_size, self.tp_size, "LMLogits vocab_size")
        rows = vocab_size // self.tp_size
        self.vocab_start = mesh_rank(mesh) * rows
        self.vocab_end = self.vocab_start + rows
        self.bias = make_parameter(full_init((vocab_size,), None), mesh, Shard(0)) if bias else None

    def forward(self, input: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """Vocabulary-parallel logits [..., vocab_size / tp] of replicated `input` [..., hidden]."""
        weight = self._local_weight(word_embeddings)
        # Every rank's vocabulary slice reads the whole input: sum its gradient over tp.
        x = dist.copy_to_tensor_parallel_region(to_local(input))
        return F.linear(x, weight, to_local(self.bias))

    def _local_weight(self, word_embeddings: torch.Tensor) -> torch.Tensor:
        if isinstance(word_embeddings, DTensor):
            return word_embeddings.to_local()
        if self.tp_size > 1 and word_embeddings.shape[0] == self.vocab_size:
            # A whole (replicated) table: use this rank's rows.
            return word_embeddings[self.vocab_start : self.vocab_end]
        return word_embeddings

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, bias={self.bias is not None}"
