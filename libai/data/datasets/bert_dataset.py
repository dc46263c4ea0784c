"""BERT pretraining samples: `[CLS] A [SEP] B [SEP]` with sentence order and masked-LM targets."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from libai.data.errors import DataError
from libai.data.datasets.text_segments import (
    Segments,
    build_samples_mapping,
    check_token_range,
    dist_tensor,
    pad_to,
    require_tokenizer,
    resolve_indexed_dataset,
)
from libai.data.placement import ALL_STAGES
from libai.data.structures import Instance

__all__ = ["BertDataset", "mask_tokens", "truncate_pair"]


def truncate_pair(
    a: np.ndarray, b: np.ndarray, max_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shorten `a` and `b` to `max_tokens` in all, as BERT does: one token at a time from the
    longer one (from `b` on a tie), each from a random end.

    The token-by-token rule is computed in closed form: the longer one loses the length
    difference first, then the two lose tokens alternately, `b` first.
    """
    excess = len(a) + len(b) - max_tokens
    if excess <= 0:
        return a, b
    gap = abs(len(a) - len(b))
    if gap >= excess:
        cut_a, cut_b = (excess, 0) if len(a) > len(b) else (0, excess)
    else:
        rest = excess - gap
        cut_a = (gap if len(a) > len(b) else 0) + rest // 2
        cut_b = (gap if len(b) > len(a) else 0) + (rest + 1) // 2
    return _cut_ends(a, cut_a, rng), _cut_ends(b, cut_b, rng)


def _cut_ends(tokens: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    # Each removed token comes from the front with probability 1/2.
    front = int(rng.binomial(count, 0.5)) if count else 0
    return tokens[front : len(tokens) - (count - front)]


def mask_tokens(
    tokens: np.ndarray,
    candidates: np.ndarray,
    mask_prob: float,
    mask_id: int,
    vocab_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking: pick `mask_prob * len(candidates)` candidate positions (at least 1);
    each becomes `[MASK]` with probability 0.8, a random token with 0.1, and stays with 0.1.

    Returns the masked tokens and the sorted predicted positions.
    """
    # Rounding up or down at random keeps the expected rate at mask_prob even for short
    # samples, where plain rounding (Megatron's) would be biased.
    expected = len(candidates) * mask_prob
    count = int(expected) + int(rng.random() < expected - int(expected))
    count = min(len(candidates), max(1, count))
    positions = np.sort(rng.permutation(candidates)[:count])
    masked = tokens.copy()
    draw = rng.random(count)
    masked[positions[draw < 0.8]] = mask_id
    replace = positions[draw >= 0.9]
    masked[replace] = rng.integers(0, vocab_size, size=len(replace))
    return masked, positions


class BertDataset(Dataset):
    """BERT samples from an indexed dataset: `[CLS] A [SEP] B [SEP]`, padded to `max_seq_length`.

    A and B are consecutive segments of one document (sentences, when the data was
    preprocessed with `--split-sentences`; otherwise pieces of a quarter of the sample
    length), cut at a random segment boundary; with probability 0.5 they are swapped and
    `ns_labels` is 1 (sentence-order prediction). With `binary_head=False` a sample is
    `[CLS] A [SEP]` and `ns_labels` is 0. `mask_lm_prob` of the non-special tokens are
    predicted (80% `[MASK]`, 10% a random token, 10% unchanged).

    Fields: `input_ids`, `attention_mask` (1 real / 0 padding), `tokentype_ids` (0 for A,
    1 for B), and on the last stage `ns_labels`, `lm_labels` (the original ids) and
    `loss_mask` (1.0 where a token is predicted). All long except `loss_mask` (float).
    A sample depends only on `(seed, idx)`. When `max_num_samples` exceeds one epoch the
    epoch's samples repeat with fresh splits and masks.
    """

    def __init__(
        self,
        name: str = "bert",
        tokenizer: Any = None,
        data_prefix: Optional[str] = None,
        indexed_dataset: Any = None,
        max_num_samples: Optional[int] = None,
        max_seq_length: int = 512,
        mask_lm_prob: float = 0.15,
        short_seq_prob: float = 0.1,
        binary_head: bool = True,
        seed: int = 1234,
    ) -> None:
        self.name = name
        require_tokenizer(name, tokenizer, ("cls_token", "sep_token", "mask_token", "pad_token"))
        self.tokenizer = tokenizer
        self.indexed_dataset = resolve_indexed_dataset(name, data_prefix, indexed_dataset)
        check_token_range(name, self.indexed_dataset, tokenizer)
        self.max_seq_length = int(max_seq_length)
        self.binary_head = bool(binary_head)
        # Room left after [CLS] and one or two [SEP].
        self.max_num_tokens = self.max_seq_length - (3 if self.binary_head else 2)
        if self.max_num_tokens < 2:
            raise DataError(
                f"dataset '{name}': max_seq_length={max_seq_length} is too short for [CLS] A [SEP] B [SEP]"
            )
        if not 0.0 < mask_lm_prob < 1.0:
            raise DataError(f"dataset '{name}': mask_lm_prob must be in (0, 1), got {mask_lm_prob}")
        self.mask_lm_prob = float(mask_lm_prob)
        self.seed = int(seed)
        self._cls, self._sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self._mask, self._pad = tokenizer.mask_token_id, tokenizer.pad_token_id
        self._vocab_size = int(tokenizer.vocab_size)

        self.segments = Segments.from_indexed(self.indexed_dataset, max(1, self.max_num_tokens // 4))
        min_segments = 2 if self.binary_head else 1
        self.samples_mapping = build_samples_mapping(
            self.segments, self.max_num_tokens, float(short_seq_prob), min_segments, self.seed
        )
        if len(self.samples_mapping) == 0:
            raise DataError(
                f"dataset '{name}' has no document with {min_segments} segments: use more data, or binary_head=False"
            )
        self._len = int(max_num_samples) if max_num_samples is not None else len(self.samples_mapping)

    def __len__(self) -> int:
        return self._len

    def _segments_of(self, idx: int) -> list[np.ndarray]:
        if not 0 <= idx < self._len:
            raise IndexError(f"sample {idx} out of range for dataset '{self.name}' of {self._len} samples")
        first, end, _ = self.samples_mapping[idx % len(self.samples_mapping)]
        return [s.astype(np.int64) for s in self.segments.read(self.indexed_dataset, int(first), int(end))]

    def _pair(self, segments: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        """Segments A and B (B empty without binary head) and whether they were swapped."""
        if not self.binary_head:
            return np.concatenate(segments)[: self.max_num_tokens], np.zeros(0, np.int64), 0
        cut = int(rng.integers(1, len(segments)))
        a, b = np.concatenate(segments[:cut]), np.concatenate(segments[cut:])
        swapped = int(rng.random() < 0.5)
        if swapped:
            a, b = b, a
        a, b = truncate_pair(a, b, self.max_num_tokens, rng)
        return a, b, swapped

    def __getitem__(self, idx: int) -> Instance:
        # Seeded by (seed, idx) only: a sample does not depend on which worker reads it, or when.
        rng = np.random.default_rng([self.seed, idx])
        a, b, ns_label = self._pair(self._segments_of(idx), rng)
        cls, sep = np.array([self._cls]), np.array([self._sep])
        parts = [cls, a, sep] + ([b, sep] if self.binary_head else [])
        tokens = np.concatenate(parts)
        tokentypes = np.zeros(len(tokens), np.int64)
        tokentypes[len(a) + 2:] = 1
        # Every position except [CLS] and the [SEP]s may be predicted.
        candidates = np.concatenate([np.arange(1, 1 + len(a)), np.arange(len(a) + 2, len(a) + 2 + len(b))])
        masked, positions = mask_tokens(tokens, candidates, self.mask_lm_prob, self._mask, self._vocab_size, rng)
        return self._padded_instance(tokens, masked, tokentypes, positions, ns_label)

    def _padded_instance(
        self, tokens: np.ndarray, masked: np.ndarray, tokentypes: np.ndarray, positions: np.ndarray, ns_label: int
    ) -> Instance:
        length = self.max_seq_length
        loss_mask = np.zeros(length, np.float32)
        loss_mask[positions] = 1.0
        return Instance(
            input_ids=dist_tensor(pad_to(masked, length, self._pad), torch.long),
            attention_mask=dist_tensor(np.arange(length) < len(tokens), torch.long, placement_idx=ALL_STAGES),
            tokentype_ids=dist_tensor(pad_to(tokentypes, length, 0), torch.long),
            ns_labels=dist_tensor(np.array(ns_label), torch.long, placement_idx=-1),
            lm_labels=dist_tensor(pad_to(tokens, length, self._pad), torch.long, placement_idx=-1),
            loss_mask=dist_tensor(loss_mask, torch.float32, placement_idx=-1),
        )
