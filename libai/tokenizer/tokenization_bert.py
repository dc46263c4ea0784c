"""BERT's WordPiece tokenizer (`vocab.txt`), e.g. bert-base-uncased's 30,522 tokens."""
from __future__ import annotations

from typing import Any, Optional

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from libai.tokenizer.tokenization_base import PreTrainedTokenizer, check_vocab_file

__all__ = ["BertTokenizer"]


def _wordpiece_backend(
    vocab_file: str, unk_token: str, do_lower_case: bool, tokenize_chinese_chars: bool, strip_accents: Optional[bool]
) -> Tokenizer:
    """Normalize (clean, lower-case, strip accents) -> split on whitespace/punctuation -> WordPiece."""
    backend = Tokenizer(models.WordPiece.from_file(vocab_file, unk_token=unk_token, max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=tokenize_chinese_chars,
        # None: follow do_lower_case, as the original BERT code does.
        strip_accents=strip_accents,
        lowercase=do_lower_case,
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


class BertTokenizer(PreTrainedTokenizer):
    """WordPiece tokenizer for BERT: `encode("hello world") == [101, 7592, 2088, 102]` with bert-base-uncased.

    `encode` adds `[CLS] ... [SEP]` (and `B [SEP]` for a pair) unless
    `add_special_tokens=False`. `do_chinese_wwm` (Chinese whole-word masking) and
    `do_basic_tokenize=False` of LiBai are not supported and are refused when set.
    """

    def __init__(
        self,
        vocab_file: str,
        do_lower_case: bool = True,
        do_basic_tokenize: bool = True,
        never_split: Optional[list[str]] = None,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        tokenize_chinese_chars: bool = True,
        strip_accents: Optional[bool] = None,
        do_chinese_wwm: bool = False,
        add_bos_token: bool = False,
        **kwargs: Any,
    ) -> None:
        vocab_file = check_vocab_file(vocab_file, "vocab_file", "BertTokenizer")
        if do_chinese_wwm or not do_basic_tokenize:
            raise NotImplementedError(
                "BertTokenizer supports neither do_chinese_wwm=True nor do_basic_tokenize=False: "
                "remove them from the config"
            )
        self.do_lower_case = bool(do_lower_case)
        self.add_bos_token = bool(add_bos_token)
        self.vocab_file = vocab_file
        backend = _wordpiece_backend(vocab_file, unk_token, self.do_lower_case, tokenize_chinese_chars, strip_accents)
        super().__init__(
            backend,
            unk_token=unk_token,
            sep_token=sep_token,
            pad_token=pad_token,
            cls_token=cls_token,
            mask_token=mask_token,
            **kwargs,
        )
        if never_split:
            # Words that must stay whole are unsplittable added tokens to the backend.
            self.add_tokens(list(never_split), special_tokens=True)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None
    ) -> list[int]:
        """`[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]` (with `add_bos_token`, `[BOS]` replaces `[CLS]`)."""
        first = self.bos_token_id if self.add_bos_token and self.bos_token is not None else self.cls_token_id
        ids = [first] + list(token_ids_0) + [self.sep_token_id]
        if token_ids_1 is not None:
            ids += list(token_ids_1) + [self.sep_token_id]
        return ids
