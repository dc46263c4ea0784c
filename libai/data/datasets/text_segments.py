"""Shared plumbing of the indexed-text datasets (GPT-2, BERT, T5).

A *segment* is the unit a BERT/T5 sample is built from: a sentence when the data was
preprocessed with `--split-sentences` (a document is then several sequences), otherwise a
fixed-length piece of a document. `build_samples_mapping` packs consecutive segments of
one document into samples of a target length, as Megatron-LM does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from libai.data.errors import DataError
from libai.data.indexed import MMapIndexedDataset, get_indexed_dataset
from libai.data.structures import DistTensorData

logger = logging.getLogger(__name__)

__all__ = [
    "Segments",
    "resolve_indexed_dataset",
    "build_samples_mapping",
    "require_tokenizer",
    "check_token_range",
    "dist_tensor",
    "pad_to",
]


def resolve_indexed_dataset(name: str, data_prefix: Optional[str], indexed_dataset: Any) -> MMapIndexedDataset:
    """The dataset's tokens: `indexed_dataset` when given, else the one opened at `data_prefix`."""
    if indexed_dataset is None:
        if data_prefix is None:
            raise DataError(f"dataset '{name}' needs data_prefix or indexed_dataset: set one in the dataset config")
        return get_indexed_dataset(data_prefix, data_impl="mmap", skip_warmup=True)
    prefix = getattr(indexed_dataset, "prefix", None)
    if data_prefix is not None and prefix is not None and str(prefix) != str(data_prefix):
        # LiBai configs repeat the prefix in two places; a half-done override shows up here.
        logger.warning("dataset '%s': data_prefix %s differs from indexed_dataset's %s; using the latter",
                       name, data_prefix, prefix)
    return indexed_dataset


def require_tokenizer(name: str, tokenizer: Any, attributes: tuple[str, ...]) -> None:
    """One clear error when the tokenizer is missing or lacks special tokens the dataset needs."""
    if tokenizer is None:
        raise DataError(
            f"dataset '{name}' needs a tokenizer: DefaultTrainer passes the one of tokenization.tokenizer; "
            f"pass tokenizer=... when building the dataset yourself"
        )
    missing = [a for a in attributes if getattr(tokenizer, a, None) is None]
    if missing:
        raise DataError(f"dataset '{name}' needs a tokenizer with {missing} set: add them to the tokenizer config")


def check_token_range(name: str, indexed: MMapIndexedDataset, tokenizer: Any, num_docs: int = 8) -> None:
    """Refuse data whose first documents hold ids the tokenizer does not have (another tokenizer's data)."""
    doc_idx = indexed.doc_idx
    last = int(doc_idx[min(num_docs, len(doc_idx) - 1)])
    largest = max((int(indexed[i].max()) for i in range(last) if indexed.sizes[i] > 0), default=-1)
    if largest >= len(tokenizer):
        raise DataError(
            f"dataset '{name}' holds token id {largest} but the tokenizer has {len(tokenizer)} tokens: "
            f"preprocess the data with the tokenizer of this config"
        )


def pad_to(array: np.ndarray, length: int, value: int) -> np.ndarray:
    """`array` followed by `value` up to `length` entries (int64)."""
    out = np.full(length, value, dtype=np.int64)
    out[: len(array)] = array
    return out


def dist_tensor(array: np.ndarray, dtype: torch.dtype, placement_idx: Union[int, str] = 0) -> DistTensorData:
    """A sample field: `array` as a tensor of `dtype`, for the pipeline stage `placement_idx`."""
    return DistTensorData(torch.as_tensor(np.asarray(array)).to(dtype), placement_idx=placement_idx)


@dataclass
class Segments:
    """Segment table: segment k is tokens `offset[k] : offset[k] + length[k]` of sequence `seq[k]`.

    Document d is segments `doc_bounds[d] : doc_bounds[d + 1]`.
    """

    seq: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    doc_bounds: np.ndarray

    @property
    def num_docs(self) -> int:
        """Number of documents."""
        return len(self.doc_bounds) - 1

    @classmethod
    def from_indexed(cls, indexed: MMapIndexedDataset, segment_length: int) -> "Segments":
        """Sentences as segments when documents hold several sequences, else `segment_length` pieces."""
        sizes = np.asarray(indexed.sizes, dtype=np.int64)
        doc_idx = np.asarray(indexed.doc_idx, dtype=np.int64)
        if len(doc_idx) < 2:
            prefix = getattr(indexed, "prefix", "")
            raise DataError(f"indexed dataset {prefix} holds no documents: preprocess some text first")
        sentence_split = bool(np.any(np.diff(doc_idx) > 1))
        if sentence_split:
            counts = np.ones(len(sizes), dtype=np.int64)
        else:
            counts = -(-sizes // int(segment_length))  # ceil; an empty sequence has no segment
        first = np.concatenate([[0], np.cumsum(counts)])
        seq = np.repeat(np.arange(len(sizes), dtype=np.int64), counts)
        piece = np.arange(len(seq), dtype=np.int64) - first[seq]
        step = sizes[seq] if sentence_split else int(segment_length)
        offset = piece * step
        length = np.minimum(step, sizes[seq] - offset)
        return cls(seq=seq, offset=offset, length=length, doc_bounds=first[doc_idx])

    def read(self, indexed: MMapIndexedDataset, start: int, end: int) -> list[np.ndarray]:
        """The tokens of segments `start:end`, one array per segment."""
        return [
            indexed.get(int(self.seq[k]), int(self.offset[k]), int(self.length[k])) for k in range(start, end)
        ]


def build_samples_mapping(
    segments: Segments,
    max_tokens: int,
    short_seq_prob: float,
    min_segments: int,
    seed: int,
) -> np.ndarray:
    """Pack consecutive segments of each document into samples: rows `(first, end, target_length)`.

    A sample grows until it holds `target_length` tokens (`max_tokens`, or with probability
    `short_seq_prob` a random length in [2, max_tokens], so the model also sees short
    inputs) while enough segments remain for the next one; the document's last sample takes
    what is left. Samples with fewer than `min_segments` segments are dropped.
    """
    rng = np.random.default_rng(seed)

    def target() -> int:
        if short_seq_prob > 0 and rng.random() < short_seq_prob:
            return int(rng.integers(2, max_tokens + 1))
        return int(max_tokens)

    lengths = segments.length.tolist()
    bounds = segments.doc_bounds.tolist()
    rows: list[tuple[int, int, int]] = []
    for d in range(len(bounds) - 1):
        first, last = bounds[d], bounds[d + 1]
        if last - first < min_segments:
            continue
        start, tokens, goal = first, 0, target()
        for k in range(first, last):
            tokens += lengths[k]
            remaining = last - k - 1
            full = tokens >= goal and k + 1 - start >= min_segments and remaining >= min_segments
            if full or remaining == 0:
                if k + 1 - start >= min_segments:
                    rows.append((start, k + 1, goal))
                start, tokens, goal = k + 1, 0, target()
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)
