"""GPT-2 language-model samples: fixed windows over the token stream of an indexed dataset."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from libai.data.errors import DataError
from libai.data.datasets.text_segments import check_token_range, dist_tensor, resolve_indexed_dataset
from libai.data.structures import Instance

__all__ = ["GPT2Dataset"]


def _expand_documents(doc_order: np.ndarray, doc_idx: np.ndarray) -> np.ndarray:
    """The sequence ids of documents `doc_order`, document by document."""
    starts = doc_idx[doc_order]
    counts = doc_idx[doc_order + 1] - starts
    first = np.concatenate([[0], np.cumsum(counts)])
    return np.repeat(starts - first[:-1], counts) + np.arange(first[-1], dtype=np.int64)


class GPT2Dataset(Dataset):
    """Contiguous windows of `max_seq_length + 1` tokens over all documents as one stream.

    Sample i starts at token `i * max_seq_length` of the stream, so consecutive samples share
    one token (the last label of one is the first input of the next) and together cover the
    stream. Epoch 0 reads documents in order. When `max_num_samples` needs more than one epoch,
    each later epoch e reads the documents in an order shuffled with `(seed, e)` (as Megatron-LM
    does); `len(self)` is then `max_num_samples`, else the samples of one epoch.

    Fields: `input_ids` (window[:-1], long) and `labels` (window[1:], long, last stage).
    `tokenizer` is optional (the data is already tokenized); when given, the data's ids are
    checked against its size.
    """

    def __init__(
        self,
        name: str = "gpt-2",
        tokenizer: Any = None,
        data_prefix: Optional[str] = None,
        indexed_dataset: Any = None,
        max_num_samples: Optional[int] = None,
        max_seq_length: int = 1024,
        seed: int = 1234,
    ) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.indexed_dataset = resolve_indexed_dataset(name, data_prefix, indexed_dataset)
        self.max_seq_length = int(max_seq_length)
        self.seed = int(seed)
        if self.max_seq_length < 1:
            raise DataError(f"dataset '{name}': max_seq_length must be >= 1, got {max_seq_length}")
        if tokenizer is not None:
            check_token_range(name, self.indexed_dataset, tokenizer)
        self._build_stream(max_num_samples)

    def _build_stream(self, max_num_samples: Optional[int]) -> None:
        doc_idx = np.asarray(self.indexed_dataset.doc_idx, dtype=np.int64)
        sizes = np.asarray(self.indexed_dataset.sizes, dtype=np.int64)
        num_docs = len(doc_idx) - 1
        epoch_tokens = int(sizes[doc_idx[0]:doc_idx[-1]].sum()) if num_docs > 0 else 0
        window = self.max_seq_length
        if epoch_tokens < window + 1:
            raise DataError(
                f"dataset '{self.name}' has {epoch_tokens} tokens, fewer than max_seq_length + 1 = {window + 1}: "
                f"use more data or a shorter max_seq_length"
            )
        epoch_samples = (epoch_tokens - 1) // window
        if max_num_samples is None:
            num_epochs, self._len = 1, epoch_samples
        else:
            self._len = int(max_num_samples)
            # Smallest number of epochs whose stream holds max_num_samples windows.
            num_epochs = max(1, -(-(self._len * window + 1) // epoch_tokens))
        orders = [np.arange(num_docs, dtype=np.int64)]
        orders += [np.random.default_rng([self.seed, e]).permutation(num_docs) for e in range(1, num_epochs)]
        self._seqs = _expand_documents(np.concatenate(orders), doc_idx)
        self._seq_sizes = sizes[self._seqs]
        # _starts[k]: stream position of the first token of the k-th sequence read.
        self._starts = np.concatenate([[0], np.cumsum(self._seq_sizes)])
        self.num_epochs = num_epochs

    def __len__(self) -> int:
        return self._len

    def sample_tokens(self, idx: int) -> np.ndarray:
        """The `max_seq_length + 1` stream tokens of sample `idx` (int64)."""
        if not 0 <= idx < self._len:
            raise IndexError(f"sample {idx} out of range for dataset '{self.name}' of {self._len} samples")
        position, needed = idx * self.max_seq_length, self.max_seq_length + 1
        # 'right' skips empty sequences that start at the same position.
        k = int(np.searchsorted(self._starts, position, side="right")) - 1
        pieces = []
        while needed > 0:
            offset = position - int(self._starts[k])
            take = min(needed, int(self._seq_sizes[k]) - offset)
            if take > 0:
                pieces.append(self.indexed_dataset.get(int(self._seqs[k]), offset, take))
                position, needed = position + take, needed - take
            k += 1
        return np.concatenate(pieces).astype(np.int64)

    def __getitem__(self, idx: int) -> Instance:
        tokens = self.sample_tokens(idx)
        return Instance(
            input_ids=dist_tensor(tokens[:-1], torch.long),
            labels=dist_tensor(tokens[1:], torch.long, placement_idx=-1),
        )
