"""Stopping criteria, with Hugging Face's names and meanings.

A criterion is a callable `criterion(input_ids [n, len], scores) -> done [n]` (bool per
sequence); `generate()` stops a sequence as soon as any criterion says it is done, and
stops the loop when every sequence is.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from .logits_process import TokenIds, as_token_tensor


class StoppingCriteria:
    """Base class: `__call__(input_ids, scores) -> bool tensor [n]`, True = this sequence is done."""

    def __call__(self, input_ids: torch.Tensor, scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class StoppingCriteriaList(list):
    """A list of criteria: a sequence is done when any of them says so."""

    def __call__(self, input_ids: torch.Tensor, scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self:
            done = done | criterion(input_ids, scores)
        return done

    @property
    def max_length(self) -> Optional[int]:
        """The `max_length` of the first `MaxLengthCriteria` in the list, if any."""
        for criterion in self:
            if isinstance(criterion, MaxLengthCriteria):
                return criterion.max_length
        return None


class MaxLengthCriteria(StoppingCriteria):
    """Done once a sequence (prompt included) has `max_length` tokens.

    Args:
        max_length: the total length at which to stop.
    """

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, input_ids: torch.Tensor, scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        done = input_ids.shape[-1] >= self.max_length
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class MaxTimeCriteria(StoppingCriteria):
    """Done for every sequence once `max_time` seconds have passed since `initial_timestamp`
    (default: when the criterion was made).

    Args:
        max_time: seconds allowed.
        initial_timestamp: the start, as `time.time()`.
    """

    def __init__(self, max_time: float, initial_timestamp: Optional[float] = None) -> None:
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids: torch.Tensor, scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class EosTokenCriteria(StoppingCriteria):
    """Done when a sequence's last token is an end-of-sequence id.

    Args:
        eos_token_id: one id or several.
    """

    def __init__(self, eos_token_id: TokenIds) -> None:
        self.eos_token_id = as_token_tensor(eos_token_id)

    def __call__(self, input_ids: torch.Tensor, scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.eos_token_id.to(input_ids.device))
