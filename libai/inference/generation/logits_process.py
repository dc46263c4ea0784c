"""Logits processors and warpers, with Hugging Face's names and meanings.

Each is a callable `processor(input_ids, scores) -> scores`: `input_ids` [n, len] are the
sequences so far (prompt included), `scores` [n, vocab] the next-token scores (logits, or
log-probabilities in beam search). A processor returns new scores and never changes its
inputs. `generate()` builds the list from its arguments in Hugging Face's order:
repetition penalty, no-repeat n-grams, min length, min new tokens, the user's processors,
then (sampling only) temperature, top-k and top-p.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Union

import torch

TokenIds = Union[int, Iterable[int], torch.Tensor]


def as_token_tensor(token_ids: Optional[TokenIds], device: Optional[torch.device] = None) -> Optional[torch.Tensor]:
    """A 1-D int64 tensor of token ids (one id or several); None stays None."""
    if token_ids is None:
        return None
    if isinstance(token_ids, torch.Tensor):
        return token_ids.reshape(-1).to(device=device, dtype=torch.long)
    if isinstance(token_ids, int):
        token_ids = [token_ids]
    return torch.tensor(list(token_ids), dtype=torch.long, device=device)


class LogitsProcessor:
    """Base class: `__call__(input_ids [n, len], scores [n, vocab]) -> scores [n, vocab]`."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class LogitsProcessorList(list):
    """A list of processors applied in order (Hugging Face's `LogitsProcessorList`)."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Scores of tokens already in the sequence: divided by `penalty` when positive,
    multiplied when negative (CTRL's penalty; > 1 discourages repeats, < 1 encourages).

    Args:
        penalty: the factor, > 0.
    """

    def __init__(self, penalty: float) -> None:
        if not (isinstance(penalty, (int, float)) and penalty > 0):
            raise ValueError(f"repetition_penalty must be a positive number, got {penalty!r}")
        self.penalty = float(penalty)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen = torch.gather(scores, 1, input_ids)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, input_ids, seen)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Bans every token that would repeat an n-gram of size `ngram_size` already in the sequence.

    Args:
        ngram_size: n, >= 1.
    """

    def __init__(self, ngram_size: int) -> None:
        if not (isinstance(ngram_size, int) and ngram_size > 0):
            raise ValueError(f"no_repeat_ngram_size must be a positive integer, got {ngram_size!r}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n, length = self.ngram_size, input_ids.shape[-1]
        if length < n:
            return scores
        # The next token completes an n-gram whose first n-1 tokens are the sequence's last
        # n-1: every earlier window starting with those tokens bans the token that followed.
        prefix = input_ids[:, length - n + 1 :]
        windows = input_ids.unfold(1, n, 1)  # [rows, length - n + 1, n]
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
        vocab = scores.shape[-1]
        banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        # Non-matching windows write into a spare column, which is dropped.
        targets = torch.where(matches, windows[..., -1].clamp(max=vocab), vocab)
        banned.scatter_(1, targets, True)
        return scores.masked_fill(banned[:, :vocab], -math.inf)


class MinLengthLogitsProcessor(LogitsProcessor):
    """End-of-sequence tokens are impossible while the sequence (prompt included) is shorter
    than `min_length`.

    Args:
        min_length: the minimum total length.
        eos_token_id: the end-of-sequence id(s).
    """

    def __init__(self, min_length: int, eos_token_id: TokenIds) -> None:
        if not (isinstance(min_length, int) and min_length >= 0):
            raise ValueError(f"min_length must be a non-negative integer, got {min_length!r}")
        self.min_length = min_length
        self.eos_token_id = as_token_tensor(eos_token_id)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] >= self.min_length:
            return scores.clone()
        return _ban(scores, self.eos_token_id)


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """End-of-sequence tokens are impossible until `min_new_tokens` tokens follow the prompt.

    Args:
        prompt_length_to_skip: the prompt's length.
        min_new_tokens: the minimum number of new tokens.
        eos_token_id: the end-of-sequence id(s).
    """

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id: TokenIds) -> None:
        if not (isinstance(min_new_tokens, int) and min_new_tokens >= 0):
            raise ValueError(f"min_new_tokens must be a non-negative integer, got {min_new_tokens!r}")
        self.prompt_length_to_skip = prompt_length_to_skip
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = as_token_tensor(eos_token_id)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[-1] - self.prompt_length_to_skip >= self.min_new_tokens:
            return scores.clone()
        return _ban(scores, self.eos_token_id)


def _ban(scores: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """`scores` with the columns of `token_ids` set to -inf."""
    banned = torch.isin(torch.arange(scores.shape[-1], device=scores.device), token_ids.to(scores.device))
    return torch.where(banned, -math.inf, scores)


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """Makes the given token ids impossible (e.g. the padding rows of a vocabulary padded
    for tensor parallelism, which no tokenizer produces).

    Args:
        suppress_tokens: the ids to ban.
    """

    def __init__(self, suppress_tokens: TokenIds) -> None:
        self.suppress_tokens = as_token_tensor(suppress_tokens)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return _ban(scores, self.suppress_tokens)


class TemperatureLogitsWarper(LogitsProcessor):
    """Divides the scores by `temperature` (> 1 flattens the distribution, < 1 sharpens it).

    Args:
        temperature: a strictly positive float.
    """

    def __init__(self, temperature: float) -> None:
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(
                f"temperature must be a strictly positive float, got {temperature!r}: use do_sample=False "
                f"for greedy decoding"
            )
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keeps the `top_k` highest scores (ties with the k-th kept too), the rest to `filter_value`.

    Args:
        top_k: how many to keep, >= 1.
        filter_value: the score of the removed tokens.
        min_tokens_to_keep: keep at least this many.
    """

    def __init__(self, top_k: int, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(top_k, int) and top_k > 0):
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        return scores.masked_fill(scores < kth, self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus filtering: keeps the smallest set of most likely tokens whose probabilities
    add up to at least `top_p`, the rest to `filter_value`.

    Args:
        top_p: the probability mass, in (0, 1].
        filter_value: the score of the removed tokens.
        min_tokens_to_keep: keep at least this many.
    """

    def __init__(self, top_p: float, filter_value: float = -math.inf, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must be a float in (0, 1], got {top_p!r}")
        if not (isinstance(min_tokens_to_keep, int) and min_tokens_to_keep >= 1):
            raise ValueError(f"min_tokens_to_keep must be a positive integer, got {min_tokens_to_keep!r}")
        self.top_p = float(top_p)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        # Ascending order: the tokens whose mass above them already exceeds top_p go.
        remove = cumulative <= (1 - self.top_p)
        remove[..., -self.min_tokens_to_keep :] = False
        remove = remove.scatter(1, order, remove)
        return scores.masked_fill(remove, self.filter_value)
