"""Build the tokenizer of a config's `tokenization` group and pad the vocabulary for tensor parallelism."""
from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, open_dict

from libai.config import instantiate
from libai.tokenizer.tokenization_base import PreTrainedTokenizer

logger = logging.getLogger(__name__)

__all__ = ["build_tokenizer", "vocab_size_with_padding"]


def _tensor_parallel_size() -> int:
    # Imported here: building a tokenizer must not require torch.distributed to be set up.
    from libai.utils import distributed as dist

    return dist.get_tensor_parallel_size() if dist.is_dist_util_ready() else 1


def vocab_size_with_padding(
    orig_vocab_size: int, make_vocab_size_divisible_by: int, tensor_parallel_size: int = 1
) -> int:
    """`orig_vocab_size` rounded up to a multiple of `make_vocab_size_divisible_by * tensor_parallel_size`.

    Each tensor-parallel rank then holds an equal, GPU-friendly slice of the embedding.
    """
    multiple = int(make_vocab_size_divisible_by) * int(tensor_parallel_size)
    if multiple < 1:
        raise ValueError(
            f"tokenization.make_vocab_size_divisible_by must be >= 1, got {make_vocab_size_divisible_by}"
        )
    padded = -(-int(orig_vocab_size) // multiple) * multiple
    logger.info(
        " > padded vocab (size: %d) with %d dummy tokens (new size: %d)",
        orig_vocab_size, padded - orig_vocab_size, padded,
    )
    return padded


def build_tokenizer(cfg: Any) -> PreTrainedTokenizer:
    """Instantiate `cfg.tokenizer` and record `cfg.padded_vocab_size`.

    `cfg` is a config's `tokenization` group: `tokenizer` (a LazyCall), optional `append_eod`
    (when set and the tokenizer has no `eod_token`, its eos or else pad token becomes it)
    and `make_vocab_size_divisible_by` (default 128). The tensor-parallel size comes from
    `libai.utils.distributed` once it is set up, else 1.
    """
    if cfg is None or cfg.get("tokenizer") is None:
        raise ValueError(
            "build_tokenizer needs tokenization.tokenizer: set it to LazyCall(GPT2Tokenizer)(...) or similar"
        )
    tokenizer = instantiate(cfg.tokenizer)
    if cfg.get("append_eod", False) and tokenizer.eod_token is None:
        tokenizer.eod_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.pad_token
    divisible_by = cfg.get("make_vocab_size_divisible_by", 128)
    padded = vocab_size_with_padding(len(tokenizer), divisible_by, _tensor_parallel_size())
    if isinstance(cfg, DictConfig):
        # The key is new to the config group; struct mode would refuse it otherwise.
        with open_dict(cfg):
            cfg.padded_vocab_size = padded
    else:
        cfg["padded_vocab_size"] = padded
    return tokenizer
