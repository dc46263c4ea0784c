"""The tokenizer base class: LiBai's method and attribute names over a Hugging Face `tokenizers` backend.

A subclass builds a `tokenizers.Tokenizer` (model, normalizer, pre-tokenizer, decoder) and
hands it to `PreTrainedTokenizer.__init__` with its special tokens. Special tokens are
registered in the backend so they are never split (`"[MASK]"` in text stays one token);
special tokens missing from the vocabulary are appended after it, in the order
`SPECIAL_TOKENS_ATTRIBUTES` lists them, then the additional ones in their given order.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Union

import numpy as np
from tokenizers import AddedToken, Tokenizer

from libai.utils.logger import log_ignored_arguments

__all__ = ["PreTrainedTokenizer"]

Ids = Union[int, Iterable[int], Any]  # also torch tensors and numpy arrays

# One slot per named special token; "additional_special_tokens" holds a list.
SPECIAL_TOKENS_ATTRIBUTES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
    "eod_token",
    "additional_special_tokens",
)
_SINGLE_TOKENS = SPECIAL_TOKENS_ATTRIBUTES[:-1]


def check_vocab_file(path: Optional[str], what: str, owner: str) -> str:
    """`path` as a string when it names an existing file; a one-line error otherwise."""
    if path is None:
        raise ValueError(f"{owner} needs {what}: pass {what}=... (see libai.tokenizer.offline for shipped files)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{owner}: {what} {path!r} does not exist: check the path in the tokenizer config")
    return path


def _to_id_list(ids: Ids) -> list[int]:
    """Token ids given as an int, a sequence, a numpy array or a torch tensor, as a flat list."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    return [int(i) for i in ids]


def _token_property(name: str, meaning: str) -> property:
    """A read/write property for the special token `name`; writing registers the token."""

    def getter(self: "PreTrainedTokenizer") -> Optional[str]:
        return self._special[name]

    def setter(self: "PreTrainedTokenizer", token: Optional[str]) -> None:
        self._set_special(name, token)

    return property(getter, setter, doc=f"The {meaning} token (None if this tokenizer has none).")


def _id_property(name: str) -> property:
    """A read-only property with the id of the special token `name` (None if unset)."""

    def getter(self: "PreTrainedTokenizer") -> Optional[int]:
        return self._special_id(name)

    return property(getter, doc=f"Id of `{name}` (None if unset).")


class PreTrainedTokenizer:
    """Base of all tokenizers: tokenize, encode/decode, token <-> id and special tokens.

    Special tokens are read as `tokenizer.cls_token` and their ids as `tokenizer.cls_token_id`
    (likewise `bos`, `eos`, `unk`, `sep`, `pad`, `mask`, `eod`); assigning
    `tokenizer.eod_token = "..."` registers the token. `additional_special_tokens` (e.g. T5's
    sentinels `<extra_id_0>`, ...) and their `additional_special_tokens_ids` are a list.
    `vocab_size` is the base vocabulary, `len(tokenizer)` includes added tokens.
    """

    SPECIAL_TOKENS_ATTRIBUTES = SPECIAL_TOKENS_ATTRIBUTES

    def __init__(self, backend: Tokenizer, verbose: bool = False, **special_tokens: Any) -> None:
        unknown = sorted(set(special_tokens) - set(SPECIAL_TOKENS_ATTRIBUTES))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown argument(s) {unknown}")
        self._backend = backend
        self.verbose = verbose
        self._special: dict[str, Optional[str]] = {name: None for name in _SINGLE_TOKENS}
        self._additional: list[str] = []
        # Named tokens first, in attribute order, so appended ids are predictable.
        for name in _SINGLE_TOKENS:
            if special_tokens.get(name) is not None:
                setattr(self, name, special_tokens[name])
        if special_tokens.get("additional_special_tokens"):
            self.additional_special_tokens = special_tokens["additional_special_tokens"]

    # ----------------------------------------------------------------------------------
    # Special tokens
    # ----------------------------------------------------------------------------------

    def _register(self, tokens: list[str]) -> int:
        """Make `tokens` unsplittable special tokens; return how many were new to the vocabulary."""
        before = len(self)
        # normalized=False: match the literal text, before lower-casing (BERT) changes it.
        self._backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
        return len(self) - before

    def _set_special(self, name: str, token: Optional[str]) -> None:
        if token is not None:
            if not isinstance(token, str):
                raise TypeError(f"{name} must be a string, got {type(token).__name__}")
            self._register([token])
        self._special[name] = token

    def _special_id(self, name: str) -> Optional[int]:
        token = self._special[name]
        return None if token is None else self.convert_tokens_to_ids(token)

    bos_token = _token_property("bos_token", "beginning of sequence")
    eos_token = _token_property("eos_token", "end of sequence")
    unk_token = _token_property("unk_token", "out-of-vocabulary")
    sep_token = _token_property("sep_token", "segment separator")
    pad_token = _token_property("pad_token", "padding")
    cls_token = _token_property("cls_token", "classification (first) position")
    mask_token = _token_property("mask_token", "masked-LM")
    eod_token = _token_property("eod_token", "end of document")

    bos_token_id = _id_property("bos_token")
    eos_token_id = _id_property("eos_token")
    unk_token_id = _id_property("unk_token")
    sep_token_id = _id_property("sep_token")
    pad_token_id = _id_property("pad_token")
    cls_token_id = _id_property("cls_token")
    mask_token_id = _id_property("mask_token")
    eod_token_id = _id_property("eod_token")

    # Megatron's short names, used by dataset code.
    eod = property(lambda self: self.eod_token_id, doc="Id of the end-of-document token (Megatron's name).")
    cls = property(lambda self: self.cls_token_id, doc="Id of `cls_token`.")
    sep = property(lambda self: self.sep_token_id, doc="Id of `sep_token`.")
    pad = property(lambda self: self.pad_token_id, doc="Id of `pad_token`.")
    mask = property(lambda self: self.mask_token_id, doc="Id of `mask_token`.")

    @property
    def additional_special_tokens(self) -> list[str]:
        """Extra special tokens (e.g. T5 sentinels), in the order they were given."""
        return list(self._additional)

    @additional_special_tokens.setter
    def additional_special_tokens(self, tokens: Iterable[str]) -> None:
        tokens = list(tokens)
        bad = [t for t in tokens if not isinstance(t, str)]
        if bad:
            raise TypeError(f"additional_special_tokens must be strings, got {bad[:3]}")
        self._register(tokens)
        self._additional = tokens

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        """Ids of `additional_special_tokens`, in order."""
        return self.convert_tokens_to_ids(self._additional)

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        """`{attribute: token}` for every special token that is set."""
        out: dict[str, Any] = {k: v for k, v in self._special.items() if v is not None}
        if self._additional:
            out["additional_special_tokens"] = list(self._additional)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        """Every special token, each once, named ones first."""
        tokens = [t for t in self._special.values() if t is not None] + self._additional
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of `all_special_tokens`."""
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def add_special_tokens(self, special_tokens_dict: dict[str, Any]) -> int:
        """Set special tokens by attribute name (`{"eod_token": "<|endoftext|>"}`); return how many are new.

        `additional_special_tokens` given here are appended to the existing ones.
        """
        before = len(self)
        for name, value in special_tokens_dict.items():
            if name not in SPECIAL_TOKENS_ATTRIBUTES:
                raise KeyError(
                    f"{name!r} is not a special token attribute: use one of {list(SPECIAL_TOKENS_ATTRIBUTES)}"
                )
            if name == "additional_special_tokens":
                new = [t for t in value if t not in self._additional]
                self.additional_special_tokens = self._additional + new
            else:
                setattr(self, name, value)
        return len(self) - before

    def add_tokens(self, new_tokens: Union[str, list[str]], special_tokens: bool = False) -> int:
        """Append tokens missing from the vocabulary; return how many were added."""
        tokens = [new_tokens] if isinstance(new_tokens, str) else list(new_tokens)
        if special_tokens:
            return self._register(tokens)
        before = len(self)
        self._backend.add_tokens(tokens)
        return len(self) - before

    # ----------------------------------------------------------------------------------
    # Vocabulary
    # ----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        """Size of the full vocabulary, added tokens included."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def padded_vocab_size(self, multiple: int = 1) -> int:
        """`len(self)` rounded up to a multiple of `multiple` (embedding rows for tensor parallelism)."""
        if int(multiple) < 1:
            raise ValueError(f"padded_vocab_size needs multiple >= 1, got {multiple}")
        multiple = int(multiple)
        return -(-len(self) // multiple) * multiple

    def get_vocab(self) -> dict[str, int]:
        """`{token: id}` for the whole vocabulary, added tokens included."""
        return self._backend.get_vocab(with_added_tokens=True)

    def get_added_vocab(self) -> dict[str, int]:
        """`{token: id}` of the tokens appended after the base vocabulary."""
        return {t: i for t, i in self.get_vocab().items() if i >= self.vocab_size}

    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer`."""
        return self._backend

    # ----------------------------------------------------------------------------------
    # Text <-> tokens <-> ids
    # ----------------------------------------------------------------------------------

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Split `text` into vocabulary tokens (no special tokens added)."""
        return self._backend.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens: Union[str, Iterable[str]]) -> Union[int, list[int]]:
        """Id of a token (or list of ids of a list); unknown tokens map to `unk_token_id`."""
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _token_to_id(self, token: str) -> int:
        index = self._backend.token_to_id(token)
        if index is not None:
            return index
        unk = self._special["unk_token"]
        unk_id = None if unk is None else self._backend.token_to_id(unk)
        if unk_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary and {type(self).__name__} has no unk_token")
        return unk_id

    def convert_ids_to_tokens(self, ids: Ids, skip_special_tokens: bool = False) -> Union[str, list[str]]:
        """Token of an id (or list of tokens of a list of ids)."""
        single = isinstance(ids, (int, np.integer)) or (hasattr(ids, "ndim") and ids.ndim == 0)
        id_list = _to_id_list(ids)
        special = set(self.all_special_ids) if skip_special_tokens else set()
        tokens = [self._id_to_token(i) for i in id_list if i not in special]
        return tokens[0] if single and tokens else tokens

    def _id_to_token(self, index: int) -> str:
        token = self._backend.id_to_token(index)
        if token is None:
            raise IndexError(f"token id {index} is outside the vocabulary of size {len(self)}")
        return token

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join tokens back into text (byte-level or word-piece aware)."""
        decoder = self._backend.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None
    ) -> list[int]:
        """Add the model's special tokens around one sequence or a pair (base: concatenate)."""
        return list(token_ids_0) + (list(token_ids_1) if token_ids_1 is not None else [])

    def encode(self, text: str, text_pair: Optional[str] = None, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` (and `text_pair`), with the model's special tokens unless told not to."""
        ids = self._backend.encode(text, add_special_tokens=False).ids
        pair = self._backend.encode(text_pair, add_special_tokens=False).ids if text_pair is not None else None
        if add_special_tokens:
            return self.build_inputs_with_special_tokens(ids, pair)
        return ids + (pair or [])

    def decode(
        self, token_ids: Ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = True
    ) -> str:
        """Text of `token_ids`; ids past the vocabulary (padding rows) are dropped.

        `clean_up_tokenization_spaces` is accepted for LiBai compatibility: the backend's
        decoder already joins word pieces and punctuation.
        """
        if not clean_up_tokenization_spaces:
            log_ignored_arguments(
                f"{type(self).__name__}.decode", "the backend's decoder joins word pieces and punctuation",
                clean_up_tokenization_spaces=False,
            )
        ids = [i for i in _to_id_list(token_ids) if 0 <= i < len(self)]
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(vocab_size={self.vocab_size}, len={len(self)}, special={self.special_tokens_map})"
