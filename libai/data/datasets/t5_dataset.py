"""T5 pretraining samples: span corruption with sentinel tokens."""
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

__all__ = ["T5Dataset", "span_counts", "random_spans"]


def span_counts(length: int, masked_lm_prob: float, mean_span_length: float, max_spans: int) -> tuple[int, int]:
    """`(noise tokens, noise spans)` for a text of `length` tokens (both 0 when it is too short)."""
    if length < 2:
        return 0, 0
    noise = min(max(int(round(length * masked_lm_prob)), 1), length - 1)
    spans = max(1, int(round(noise / mean_span_length)))
    # Each noise span needs a sentinel, and spans are separated by kept tokens.
    return noise, min(spans, noise, length - noise, max_spans)


def _random_partition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`parts` positive integers summing to `total`, uniformly over such partitions."""
    cuts = np.sort(rng.choice(total - 1, size=parts - 1, replace=False) + 1) if parts > 1 else np.zeros(0, int)
    return np.diff(np.concatenate([[0], cuts, [total]]))


def random_spans(length: int, noise: int, spans: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """`spans` disjoint, non-adjacent `(start, end)` noise spans holding `noise` of `length` tokens.

    Kept runs between spans are non-empty; the runs before the first and after the last
    span may be empty, so a span can start or end the text.
    """
    # Partition kept + 2 into spans + 1 positive runs, then take one token back from each end run.
    kept = _random_partition(length - noise + 2, spans + 1, rng)
    kept[0] -= 1
    noisy = _random_partition(noise, spans, rng)
    out, position = [], 0
    for keep, drop in zip(kept[:-1], noisy):
        position += int(keep)
        out.append((position, position + int(drop)))
        position += int(drop)
    return out


class T5Dataset(Dataset):
    """T5 span-corruption samples from an indexed dataset.

    A sample is up to as many consecutive tokens of one document as fit the encoder and
    decoder lengths. `masked_lm_prob` of them, in spans of `mean_span_length` on average,
    are replaced in the encoder input by sentinels (the tokenizer's
    `additional_special_tokens`, `<extra_id_0>`, ...); the decoder predicts
    `<extra_id_0> span0 <extra_id_1> span1 ... [EOS]` from `[BOS] <extra_id_0> span0 ...`.
    BOS/EOS are the tokenizer's bos/eos tokens, or [CLS]/[SEP] when it has none.

    Fields: `encoder_input_ids` (s_enc), `decoder_input_ids` (s_dec), `encoder_attn_mask`
    (s_enc, s_enc), `decoder_attn_mask` (s_dec, s_dec, causal), `encoder_decoder_attn_mask`
    (s_dec, s_enc) (bool, True = may attend; padding attends to nothing and is attended by
    nothing), and on the last stage `lm_labels` (long, pad id after EOS) and `loss_mask`
    (float, 1.0 up to EOS). A sample depends only on `(seed, idx)`.
    """

    def __init__(
        self,
        name: str = "t5",
        tokenizer: Any = None,
        data_prefix: Optional[str] = None,
        indexed_dataset: Any = None,
        max_num_samples: Optional[int] = None,
        max_seq_length: int = 512,
        max_seq_length_dec: int = 128,
        masked_lm_prob: float = 0.15,
        mean_span_length: float = 3,
        short_seq_prob: float = 0.1,
        seed: int = 1234,
    ) -> None:
        self.name = name
        require_tokenizer(name, tokenizer, ("pad_token",))
        self.tokenizer = tokenizer
        self.sentinels = list(tokenizer.additional_special_tokens_ids)
        if not self.sentinels:
            raise DataError(
                f"dataset '{name}' needs sentinel tokens: build the tokenizer with "
                f"additional_special_tokens=['<extra_id_0>', '<extra_id_1>', ...]"
            )
        self._bos = tokenizer.bos_token_id if tokenizer.bos_token is not None else tokenizer.cls_token_id
        self._eos = tokenizer.eos_token_id if tokenizer.eos_token is not None else tokenizer.sep_token_id
        if self._bos is None or self._eos is None:
            raise DataError(f"dataset '{name}' needs bos/eos (or cls/sep) tokens: add them to the tokenizer config")
        self._pad = tokenizer.pad_token_id
        self.indexed_dataset = resolve_indexed_dataset(name, data_prefix, indexed_dataset)
        check_token_range(name, self.indexed_dataset, tokenizer)
        self.max_seq_length, self.max_seq_length_dec = int(max_seq_length), int(max_seq_length_dec)
        if not 0.0 < masked_lm_prob < 1.0 or mean_span_length <= 0:
            raise DataError(f"dataset '{name}': need 0 < masked_lm_prob < 1 and mean_span_length > 0")
        self.masked_lm_prob, self.mean_span_length = float(masked_lm_prob), float(mean_span_length)
        self.seed = int(seed)
        self.max_tokens = self._max_tokens()
        self.segments = Segments.from_indexed(self.indexed_dataset, max(1, self.max_tokens // 4))
        self.samples_mapping = build_samples_mapping(
            self.segments, self.max_tokens, float(short_seq_prob), 1, self.seed
        )
        if len(self.samples_mapping) == 0:
            raise DataError(f"dataset '{name}' holds no tokens: preprocess some text first")
        self._len = int(max_num_samples) if max_num_samples is not None else len(self.samples_mapping)

    def _lengths(self, length: int) -> tuple[int, int]:
        noise, spans = span_counts(length, self.masked_lm_prob, self.mean_span_length, len(self.sentinels))
        return length - noise + spans, noise + spans + 1  # encoder, decoder (+ BOS or EOS)

    def _max_tokens(self) -> int:
        """The longest text whose corrupted encoder and decoder sequences both fit."""
        rate = 1 - self.masked_lm_prob + self.masked_lm_prob / self.mean_span_length
        length = int(self.max_seq_length / rate) + 2
        while length > 1:
            enc, dec = self._lengths(length)
            if enc <= self.max_seq_length and dec <= self.max_seq_length_dec:
                return length
            length -= 1
        raise DataError(
            f"dataset '{self.name}': max_seq_length={self.max_seq_length} / max_seq_length_dec="
            f"{self.max_seq_length_dec} leave no room for a corrupted span: make them longer"
        )

    def __len__(self) -> int:
        return self._len

    def sample_tokens(self, idx: int) -> np.ndarray:
        """The original (uncorrupted) tokens of sample `idx` (int64)."""
        if not 0 <= idx < self._len:
            raise IndexError(f"sample {idx} out of range for dataset '{self.name}' of {self._len} samples")
        first, end, target = self.samples_mapping[idx % len(self.samples_mapping)]
        pieces = self.segments.read(self.indexed_dataset, int(first), int(end))
        return np.concatenate(pieces).astype(np.int64)[: int(target)]

    def corrupt(self, tokens: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`(encoder input, decoder target)`: spans replaced by sentinels, and `sentinel span ... EOS`."""
        noise, spans = span_counts(len(tokens), self.masked_lm_prob, self.mean_span_length, len(self.sentinels))
        encoder, decoder, kept_from = [], [], 0
        for k, (start, end) in enumerate(random_spans(len(tokens), noise, spans, rng)):
            encoder += [tokens[kept_from:start], [self.sentinels[k]]]
            decoder += [[self.sentinels[k]], tokens[start:end]]
            kept_from = end
        encoder.append(tokens[kept_from:])
        decoder.append([self._eos])
        return np.concatenate(encoder).astype(np.int64), np.concatenate(decoder).astype(np.int64)

    def __getitem__(self, idx: int) -> Instance:
        rng = np.random.default_rng([self.seed, idx])
        encoder, target = self.corrupt(self.sample_tokens(idx), rng)
        decoder = np.concatenate([[self._bos], target[:-1]])
        s_enc, s_dec = self.max_seq_length, self.max_seq_length_dec
        enc_valid = np.arange(s_enc) < len(encoder)
        dec_valid = np.arange(s_dec) < len(decoder)
        causal = np.tril(np.ones((s_dec, s_dec), dtype=bool))
        return Instance(
            encoder_input_ids=dist_tensor(pad_to(encoder, s_enc, self._pad), torch.long),
            decoder_input_ids=dist_tensor(pad_to(decoder, s_dec, self._pad), torch.long),
            encoder_attn_mask=dist_tensor(enc_valid[:, None] & enc_valid[None, :], torch.bool, ALL_STAGES),
            decoder_attn_mask=dist_tensor(causal & dec_valid[:, None] & dec_valid[None, :], torch.bool, ALL_STAGES),
            encoder_decoder_attn_mask=dist_tensor(dec_valid[:, None] & enc_valid[None, :], torch.bool, ALL_STAGES),
            lm_labels=dist_tensor(pad_to(target, s_dec, self._pad), torch.long, -1),
            loss_mask=dist_tensor(dec_valid.astype(np.float32), torch.float32, placement_idx=-1),
        )
