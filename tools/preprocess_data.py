#!/usr/bin/env python
"""Tokenize a JSON-lines corpus into Megatron-LM indexed datasets (`.bin` + `.idx`).

    python tools/make_shakespeare_corpus.py --output data/shakespeare.jsonl
    python tools/preprocess_data.py --input data/shakespeare.jsonl --json-keys text \\
        --tokenizer-name GPT2Tokenizer --append-eod --output-prefix data/shakespeare --workers 2

writes `data/shakespeare_text_document.bin/.idx` (`..._text_sentence...` with
`--split-sentences`, one sequence per sentence, as BERT pretraining wants). Each input line
is a JSON object; every `--json-keys` field is one document. `--vocab-file`/`--merges-file`
default to the vocabularies shipped in the offline packages. Files already there are
replaced only once the new ones are complete.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import sys
from typing import Any, Iterable, Iterator, Optional

# Runnable as `python tools/preprocess_data.py` from the repository root without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOKENIZER_NAMES = ("GPT2Tokenizer", "BertTokenizer", "RobertaTokenizer")
# A sentence ends at ., ! or ? (optionally followed by closing quotes or brackets) before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<![A-Z][.])['\")\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Split `text` into sentences with a simple punctuation rule (no NLTK); drop empty ones."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def build_tokenizer(args: argparse.Namespace) -> Any:
    """The tokenizer named by `--tokenizer-name`, on the given or the shipped vocabulary."""
    from libai.tokenizer import (
        BertTokenizer,
        GPT2Tokenizer,
        RobertaTokenizer,
        bert_vocab_file,
        gpt2_vocab_files,
        roberta_vocab_files,
    )

    byte_level = {"GPT2Tokenizer": (GPT2Tokenizer, gpt2_vocab_files), "RobertaTokenizer": (RobertaTokenizer, roberta_vocab_files)}
    if args.tokenizer_name in byte_level:
        tokenizer_class, shipped_files = byte_level[args.tokenizer_name]
        vocab, merges = (args.vocab_file, args.merges_file)
        if vocab is None or merges is None:
            shipped = shipped_files()
            vocab, merges = vocab or shipped[0], merges or shipped[1]
        return tokenizer_class(vocab_file=vocab, merges_file=merges)
    kwargs = {} if args.do_lower_case is None else {"do_lower_case": args.do_lower_case}
    return BertTokenizer(vocab_file=args.vocab_file or bert_vocab_file(), **kwargs)


class Encoder:
    """Turns one JSON line into token ids per key; each worker process builds its own tokenizer."""

    tokenizer: Any = None

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def initializer(self) -> None:
        """Build the tokenizer (in each pool worker, once)."""
        Encoder.tokenizer = build_tokenizer(self.args)

    def encode(self, numbered_line: tuple[int, str]) -> tuple[dict[str, list[list[int]]], int]:
        """`({key: [sentence ids, ...]}, bytes read)` for line `(number, text)`."""
        number, line = numbered_line
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.args.input} line {number} is not valid JSON ({e.msg})") from None
        out = {}
        for key in self.args.json_keys:
            if not isinstance(record, dict) or key not in record:
                raise ValueError(f"{self.args.input} line {number} has no key {key!r}: check --json-keys")
            out[key] = self._encode_text(str(record[key]))
        return out, len(line.encode("utf-8"))

    def _encode_text(self, text: str) -> list[list[int]]:
        pieces = split_sentences(text) if self.args.split_sentences else [text]
        tokenizer = Encoder.tokenizer
        ids = [tokenizer.encode(p, add_special_tokens=False) for p in pieces]
        ids = [s for s in ids if s]
        if ids and self.args.append_eod:
            ids[-1].append(tokenizer.eod)
        return ids


def _numbered_lines(path: str) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line


def _encoded_documents(args: argparse.Namespace, encoder: Encoder) -> Iterable[tuple[dict, int]]:
    """Encoded lines in input order, from a worker pool when `--workers` > 1."""
    lines = _numbered_lines(args.input)
    if args.workers <= 1:
        encoder.initializer()
        yield from map(encoder.encode, lines)
        return
    with multiprocessing.Pool(args.workers, initializer=encoder.initializer) as pool:
        yield from pool.imap(encoder.encode, lines, chunksize=16)


def output_prefix(args: argparse.Namespace, key: str) -> str:
    """`{output_prefix}_{key}_{document|sentence}`, Megatron's naming."""
    level = "sentence" if args.split_sentences else "document"
    return f"{args.output_prefix}_{key}_{level}"


def preprocess(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Tokenize `args.input` into one indexed dataset per JSON key; return counts per key."""
    from tqdm import tqdm

    from libai.data.indexed import MMapIndexedDatasetBuilder, best_fitting_dtype

    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input} does not exist")
    tokenizer = build_tokenizer(args)  # fail on a bad vocabulary before starting workers
    if args.append_eod and tokenizer.eod is None:
        raise ValueError(
            f"--append-eod needs a tokenizer with an end-of-document token; {args.tokenizer_name} has none"
        )
    dtype = best_fitting_dtype(len(tokenizer))
    os.makedirs(os.path.dirname(os.path.abspath(args.output_prefix)), exist_ok=True)
    # Written under temporary names, renamed when complete: a failed run leaves old files intact.
    tmp = {key: f"{output_prefix(args, key)}.tmp{os.getpid()}" for key in args.json_keys}
    builders = {key: MMapIndexedDatasetBuilder(f"{tmp[key]}.bin", dtype=dtype) for key in args.json_keys}
    counts = {key: {"documents": 0, "sequences": 0, "tokens": 0} for key in args.json_keys}
    try:
        bar = tqdm(
            total=os.path.getsize(args.input),
            unit="B",
            unit_scale=True,
            desc="tokenizing",
            miniters=args.log_interval,
            disable=args.quiet,
        )
        with bar:
            for encoded, size in _encoded_documents(args, Encoder(args)):
                _add_document(builders, counts, encoded)
                bar.update(size)
        for key, builder in builders.items():
            builder.finalize(f"{tmp[key]}.idx")
            os.replace(f"{tmp[key]}.bin", f"{output_prefix(args, key)}.bin")
            os.replace(f"{tmp[key]}.idx", f"{output_prefix(args, key)}.idx")
    finally:
        for path in tmp.values():
            for ext in (".bin", ".idx"):
                if os.path.exists(path + ext):
                    os.remove(path + ext)
    return counts


def _add_document(builders: dict, counts: dict, encoded: dict[str, list[list[int]]]) -> None:
    for key, sentences in encoded.items():
        if not sentences:
            continue  # an empty document would only add an empty entry to the index
        for sentence in sentences:
            builders[key].add_item(sentence)
            counts[key]["tokens"] += len(sentence)
        builders[key].end_document()
        counts[key]["documents"] += 1
        counts[key]["sequences"] += len(sentences)


def get_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Megatron-LM / LiBai command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_argument_group("input data")
    group.add_argument("--input", required=True, help="JSON-lines file, one document per line")
    group.add_argument("--json-keys", nargs="+", default=["text"], help="keys to extract (default: text)")
    group.add_argument("--split-sentences", action="store_true", help="one sequence per sentence")
    group.add_argument("--keep-newlines", action="store_true", help="accepted for Megatron compatibility")
    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-name", required=True, choices=TOKENIZER_NAMES)
    group.add_argument("--vocab-file", default=None, help="default: the vocabulary shipped offline")
    group.add_argument("--merges-file", default=None, help="GPT-2 / RoBERTa merges (default: shipped offline)")
    group.add_argument("--do-lower-case", action=argparse.BooleanOptionalAction, default=None,
                       help="BERT lower-casing (default: the tokenizer's, True)")
    group.add_argument("--append-eod", action="store_true", help="end every document with the eod token")
    group = parser.add_argument_group("output data")
    group.add_argument("--output-prefix", required=True, help="path prefix of the .bin/.idx files")
    group.add_argument("--dataset-impl", default="mmap", choices=["mmap"])
    group = parser.add_argument_group("runtime")
    group.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    group.add_argument("--log-interval", type=int, default=100, help="refresh the progress bar every N documents")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.tokenizer_name == "BertTokenizer" and args.merges_file is not None:
        parser.error("--merges-file is for GPT2Tokenizer and RobertaTokenizer only")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Run the tool; a user mistake ends with one line on stderr and exit status 1."""
    args = get_args(argv)
    try:
        counts = preprocess(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"preprocess_data.py: error: {e}", file=sys.stderr)
        return 1
    for key, c in counts.items():
        print(f"{output_prefix(args, key)}.bin/.idx: {c['documents']} documents, "
              f"{c['sequences']} sequences, {c['tokens']} tokens")
    return 0


if __name__ == "__main__":
    # Each worker tokenizes on one thread; the Rust backend's own threads would oversubscribe.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
