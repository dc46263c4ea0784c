"""Supervised fine-tuning data: (prompt, response) pairs, with the loss on the response only.

    SFTDataset("data/instructions.jsonl", tokenizer, max_seq_length=128, packing=True)

Each line of the JSON-lines file holds a prompt and a response (keys `prompt_key`,
`response_key`). A sample's tokens are `prompt + response + eos`; the model reads them
shifted by one as usual (`input_ids`, `labels`), and `loss_mask` is 1 exactly where the
label is a response token (or the final eos), so nothing is learned from the prompt.

With `packing=True`, short samples are laid one after another into sequences of
`max_seq_length` tokens (in file order, a sample that does not fit starts the next
sequence), and each sequence carries a block-diagonal causal `attention_mask`
[max_seq_length, max_seq_length] and `position_ids` that restart at 0 for every sample:
a token attends only to earlier tokens of its own sample, so packed samples are trained
exactly as if alone. Without packing, each sample is one sequence, padded at the end.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from libai.data.errors import DataError
from libai.data.placement import ALL_STAGES
from libai.data.structures import DistTensorData, Instance

__all__ = ["SFTDataset", "read_pairs"]


def read_pairs(path: str, prompt_key: str = "prompt", response_key: str = "response") -> list[tuple[str, str]]:
    """The (prompt, response) pairs of a JSON-lines file; a bad line is a `DataError` naming it."""
    if not os.path.isfile(path):
        raise DataError(f"SFT data file {path!r} does not exist: give a JSON-lines file of {prompt_key!r}/{response_key!r} pairs")
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                pairs.append((str(record[prompt_key]), str(record[response_key])))
            except (ValueError, KeyError, TypeError):
                raise DataError(
                    f"{path}:{number} is not a JSON object with {prompt_key!r} and {response_key!r}: fix the line"
                ) from None
    if not pairs:
        raise DataError(f"SFT data file {path!r} holds no pairs")
    return pairs


@dataclass
class _Sequence:
    """One training sequence being filled: inputs, labels, loss mask and sample index per token."""

    input_ids: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    loss_mask: list = field(default_factory=list)
    segments: list = field(default_factory=list)


class SFTDataset(Dataset):
    """Supervised fine-tuning sequences; see the module docstring.

    Args:
        path: the JSON-lines file.
        tokenizer: a LiBai tokenizer (`encode`, and `eos_token_id` or `eod_token_id`).
        max_seq_length: tokens per sequence (a longer sample is cut, keeping its prompt's start).
        prompt_key, response_key: the JSON keys of a pair.
        packing: pack several samples per sequence (see the module docstring).
        name: the dataset's name in logs.
    """

    def __init__(
        self,
        path: str,
        tokenizer: Any,
        max_seq_length: int,
        prompt_key: str = "prompt",
        response_key: str = "response",
        packing: bool = False,
        name: str = "sft",
    ) -> None:
        self.name, self.max_seq_length, self.packing = name, max_seq_length, packing
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.eod_token_id
        if eos is None:
            raise DataError("SFTDataset ends each response with the tokenizer's eos (or eod) token, and this tokenizer has none")
        self.pad_id = eos
        samples = [self._sample(tokenizer, prompt, response, eos) for prompt, response in read_pairs(path, prompt_key, response_key)]
        self.sequences = self._pack(samples) if packing else [self._one(s, i) for i, s in enumerate(samples)]

    def _sample(self, tokenizer: Any, prompt: str, response: str, eos: int) -> tuple[list, list, list]:
        """(inputs, labels, loss mask) of one pair, at most max_seq_length tokens."""
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        tokens = (prompt_ids + tokenizer.encode(response, add_special_tokens=False) + [eos])[: self.max_seq_length + 1]
        # Label t is token t + 1: learned where that token belongs to the response.
        mask = [1 if t + 1 >= len(prompt_ids) else 0 for t in range(len(tokens) - 1)]
        return tokens[:-1], tokens[1:], mask

    def _one(self, sample: tuple[list, list, list], index: int) -> _Sequence:
        return _Sequence(list(sample[0]), list(sample[1]), list(sample[2]), [index] * len(sample[0]))

    def _pack(self, samples: list) -> list[_Sequence]:
        sequences: list[_Sequence] = []
        current = _Sequence()
        for index, (inputs, labels, mask) in enumerate(samples):
            if current.input_ids and len(current.input_ids) + len(inputs) > self.max_seq_length:
                sequences.append(current)
                current = _Sequence()
            current.input_ids += inputs
            current.labels += labels
            current.loss_mask += mask
            current.segments += [index] * len(inputs)
        if current.input_ids:
            sequences.append(current)
        return sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, idx: int) -> Instance:
        seq = self.sequences[idx]
        pad = self.max_seq_length - len(seq.input_ids)
        input_ids = torch.tensor(seq.input_ids + [self.pad_id] * pad, dtype=torch.long)
        labels = torch.tensor(seq.labels + [self.pad_id] * pad, dtype=torch.long)
        loss_mask = torch.tensor(seq.loss_mask + [0] * pad, dtype=torch.float32)
        fields = dict(
            input_ids=DistTensorData(input_ids, placement_idx=0),
            labels=DistTensorData(labels, placement_idx=-1),
            loss_mask=DistTensorData(loss_mask, placement_idx=-1),
        )
        if self.packing:
            # Padding tokens get segments of their own (-1, -2, ...): each attends to itself
            # only, so no attention row is empty.
            segments = torch.tensor(seq.segments + [-1 - i for i in range(pad)])
            positions = _positions_within_segments(segments)
            same = segments[:, None] == segments[None, :]
            fields["attention_mask"] = DistTensorData(same & torch.ones_like(same).tril(), placement_idx=ALL_STAGES)
            fields["position_ids"] = DistTensorData(positions, placement_idx=ALL_STAGES)
        return Instance(**fields)

    def __repr__(self) -> str:
        return f"SFTDataset({self.name}, {len(self)} sequences of {self.max_seq_length} tokens, packing={self.packing})"


def _positions_within_segments(segments: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... restarting wherever the segment changes."""
    index = torch.arange(len(segments))
    starts = torch.ones(len(segments), dtype=torch.bool)
    starts[1:] = segments[1:] != segments[:-1]
    start_of = torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=0).values
    return index - start_of
