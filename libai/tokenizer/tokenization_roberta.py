"""RoBERTa's tokenizer: GPT-2's byte-level BPE with RoBERTa's special tokens.

RoBERTa's `vocab.json` holds `<s>`, `<pad>`, `</s>`, `<unk>` (ids 0-3 in roberta-base) and
`<mask>` besides the BPE tokens; `merges.txt` is GPT-2's. Offline, `roberta_vocab_files()`
(libai.tokenizer.offline) derives such a vocabulary from the shipped GPT-2 files.
"""
from __future__ import annotations

from typing import Any, Optional

from tokenizers import AddedToken

from libai.tokenizer.tokenization_gpt2 import GPT2Tokenizer

__all__ = ["RobertaTokenizer"]


class RobertaTokenizer(GPT2Tokenizer):
    """Byte-level BPE tokenizer for RoBERTa (LiBai's `RobertaTokenizer(vocab_file, merges_file)`).

    Special tokens: `<s>` (bos and cls), `</s>` (eos and sep), `<unk>`, `<pad>`, `<mask>`;
    `<mask>` swallows the space before it, as in Hugging Face (`"a <mask>"` -> `a`, `<mask>`).
    As in LiBai, `encode` adds nothing unless `add_bos_token=True`; then a sequence is
    `<s> A </s>` and a pair `<s> A </s></s> B </s>` (RoBERTa's and Hugging Face's format).
    RoBERTa has no end-of-document token unless `eod_token` is given.
    """

    def __init__(
        self,
        vocab_file: str,
        merges_file: str,
        errors: str = "replace",
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        sep_token: str = "</s>",
        cls_token: str = "<s>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        mask_token: str = "<mask>",
        add_bos_token: bool = False,
        eod_token: Optional[str] = None,
        add_prefix_space: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            vocab_file,
            merges_file,
            errors=errors,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            eod_token=eod_token,
            add_bos_token=add_bos_token,
            add_prefix_space=add_prefix_space,
            sep_token=sep_token,
            cls_token=cls_token,
            pad_token=pad_token,
            mask_token=mask_token,
            **kwargs,
        )
        # Registered again with lstrip: "word <mask>" keeps no "Ġ" token before the mask.
        self.backend_tokenizer.add_special_tokens(
            [AddedToken(mask_token, lstrip=True, rstrip=False, special=True, normalized=False)]
        )

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None
    ) -> list[int]:
        """The ids unchanged, or `<s> A </s>` / `<s> A </s></s> B </s>` when `add_bos_token`."""
        if not self.add_bos_token:
            return list(token_ids_0) + (list(token_ids_1) if token_ids_1 is not None else [])
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        ids = cls + list(token_ids_0) + sep
        if token_ids_1 is not None:
            ids += sep + list(token_ids_1) + sep
        return ids

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None
    ) -> list[int]:
        """Zeros for `<s> A </s>` (and `</s> B </s>`): RoBERTa uses no token types."""
        length = len(token_ids_0) + 2 + (len(token_ids_1) + 2 if token_ids_1 is not None else 0)
        return [0] * length
