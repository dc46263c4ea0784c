"""The key/value cache of incremental decoding, filled in place by the attention layers."""
from __future__ import annotations

from typing import Optional

import torch


class KVCache:
    """Past keys and values of every self-attention layer, keyed by the layer's `layer_idx`.

    Pass one to a model as `past_key_values`: each `MultiheadAttention` appends the keys and
    values of its new positions (`update`) and attends over all of them, so each decoding
    step costs one position. Every rank stores only the layers it runs (its tensor-parallel
    heads, its pipeline stage's layers), so the cache of a stage stays on that stage.

    With `max_length`, each layer's buffer is allocated once for that many positions and
    written in place (no copy of the past at every step); without it (or past it), the
    buffer doubles when full.

    Args:
        max_length: the most positions a sequence will reach (prompt + new tokens), or None.
    """

    def __init__(self, max_length: Optional[int] = None) -> None:
        self.max_length = max_length
        self._keys: dict[int, torch.Tensor] = {}
        self._values: dict[int, torch.Tensor] = {}
        self._lengths: dict[int, int] = {}

    def update(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `key`/`value` [b, heads, new, head_size] to layer `layer_idx`'s past and
        return all of its keys and values [b, heads, past + new, head_size]."""
        past = self._lengths.get(layer_idx, 0)
        end = past + key.shape[2]
        if past == 0 or end > self._keys[layer_idx].shape[2]:
            self._keys[layer_idx] = self._grow(self._keys.get(layer_idx), past, key)
            self._values[layer_idx] = self._grow(self._values.get(layer_idx), past, value)
        self._keys[layer_idx][:, :, past:end] = key
        self._values[layer_idx][:, :, past:end] = value
        self._lengths[layer_idx] = end
        return self._keys[layer_idx][:, :, :end], self._values[layer_idx][:, :, :end]

    def _grow(self, buffer: Optional[torch.Tensor], past: int, new: torch.Tensor) -> torch.Tensor:
        """A buffer for at least `past + new` positions holding the past: `max_length` at
        first, then twice what is needed each time it is full (amortised O(1) copies per
        position)."""
        needed = past + new.shape[2]
        length = max(self.max_length or 0, 2 * needed if past else needed)
        grown = new.new_empty(new.shape[0], new.shape[1], length, new.shape[3])
        if past:
            grown[:, :, :past] = buffer[:, :, :past]
        return grown

    def get_seq_length(self) -> int:
        """How many positions are cached (0 when nothing is)."""
        return next(iter(self._lengths.values()), 0)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Keep, for each row, the past of row `beam_idx[row]` (beam search)."""
        for layer_idx in self._lengths:
            index = beam_idx.to(self._keys[layer_idx].device)
            self._keys[layer_idx] = self._keys[layer_idx].index_select(0, index)
            self._values[layer_idx] = self._values[layer_idx].index_select(0, index)

    def __len__(self) -> int:
        return len(self._lengths)

    def __repr__(self) -> str:
        return f"KVCache(layers={sorted(self._lengths)}, length={self.get_seq_length()})"
