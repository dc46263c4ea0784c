"""GPT-2's byte-level BPE tokenizer (`vocab.json` + `merges.txt`, 50,257 tokens)."""
from __future__ import annotations

from typing import Any, Optional

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from libai.tokenizer.tokenization_base import PreTrainedTokenizer, check_vocab_file

__all__ = ["GPT2Tokenizer"]

_ENDOFTEXT = "<|endoftext|>"


def _byte_level_backend(vocab_file: str, merges_file: str, add_prefix_space: bool) -> Tokenizer:
    """Bytes -> GPT-2's regex pre-split -> BPE merges; decoding maps the byte alphabet back, losslessly."""
    backend = Tokenizer(models.BPE.from_file(vocab_file, merges_file))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    return backend


class GPT2Tokenizer(PreTrainedTokenizer):
    """Byte-level BPE tokenizer for GPT-2: `encode("Hello world") == [15496, 995]`.

    `<|endoftext|>` (id 50256) is the unk, bos, eos and end-of-document token, as in GPT-2.
    `encode` adds nothing unless `add_bos_token=True`. Any text round-trips exactly through
    `decode(encode(text))`.
    """

    def __init__(
        self,
        vocab_file: str,
        merges_file: str,
        errors: str = "replace",
        unk_token: str = _ENDOFTEXT,
        bos_token: str = _ENDOFTEXT,
        eos_token: str = _ENDOFTEXT,
        eod_token: Optional[str] = _ENDOFTEXT,
        add_bos_token: bool = False,
        add_prefix_space: bool = False,
        **kwargs: Any,
    ) -> None:
        vocab_file = check_vocab_file(vocab_file, "vocab_file", "GPT2Tokenizer")
        merges_file = check_vocab_file(merges_file, "merges_file", "GPT2Tokenizer")
        # `errors` is LiBai's bytes.decode policy; the byte-level decoder always replaces
        # invalid UTF-8, so only that value is meaningful.
        self.errors = errors
        self.add_bos_token = bool(add_bos_token)
        self.add_prefix_space = bool(add_prefix_space)
        self.vocab_file, self.merges_file = vocab_file, merges_file
        backend = _byte_level_backend(vocab_file, merges_file, self.add_prefix_space)
        super().__init__(
            backend, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, eod_token=eod_token, **kwargs
        )

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None
    ) -> list[int]:
        """The ids unchanged, or with `bos_token` in front of each sequence when `add_bos_token`."""
        bos = [self.bos_token_id] if self.add_bos_token else []
        ids = bos + list(token_ids_0)
        if token_ids_1 is not None:
            ids += bos + list(token_ids_1)
        return ids
