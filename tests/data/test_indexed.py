"""Megatron mmap indexed datasets: builder, reader, byte layout, tools, and clear errors."""
import importlib.util
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from libai.data.indexed import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    best_fitting_dtype,
    get_indexed_dataset,
)
from libai.tokenizer import BertTokenizer, GPT2Tokenizer, bert_vocab_file, gpt2_vocab_files
from tests.helpers.runs import REPO

# Two documents: the first holds two sequences (sentences), the second one.
DOCS = [[[1, 2, 3], [4, 5]], [[6]]]


def _write(prefix, docs, dtype):
    builder = MMapIndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for doc in docs:
        for seq in doc:
            builder.add_item(torch.tensor(seq))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")


def _megatron_index_bytes(code, sizes, itemsize, doc_idx):
    """The .idx of Megatron-LM's layout, spelled out field by field."""
    pointers = np.concatenate([[0], np.cumsum(sizes)[:-1]]) * itemsize
    out = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", code)
    out += struct.pack("<Q", len(sizes)) + struct.pack("<Q", len(doc_idx))
    out += struct.pack(f"<{len(sizes)}i", *sizes)
    out += struct.pack(f"<{len(sizes)}q", *pointers)
    out += struct.pack(f"<{len(doc_idx)}q", *doc_idx)
    return out


def test_hand_built_megatron_files_read_back(tmp_path):
    prefix = str(tmp_path / "hand")
    tokens = [1, 2, 3, 4, 5, 6]
    with open(prefix + ".idx", "wb") as f:
        f.write(_megatron_index_bytes(4, [3, 2, 1], 4, [0, 2, 3]))
    with open(prefix + ".bin", "wb") as f:
        f.write(struct.pack("<6i", *tokens))
    ds = MMapIndexedDataset(prefix)
    assert len(ds) == 3 and ds.dtype == np.int32
    assert ds.sizes.tolist() == [3, 2, 1] and ds.doc_idx.tolist() == [0, 2, 3]
    assert [ds[i].tolist() for i in range(3)] == [[1, 2, 3], [4, 5], [6]]


@pytest.mark.parametrize("dtype, code", [(np.uint16, 8), (np.int32, 4), (np.int64, 5), (np.uint8, 1)])
def test_builder_writes_megatron_bytes(tmp_path, dtype, code):
    prefix = str(tmp_path / "built")
    _write(prefix, DOCS, dtype)
    itemsize = np.dtype(dtype).itemsize
    with open(prefix + ".idx", "rb") as f:
        assert f.read() == _megatron_index_bytes(code, [3, 2, 1], itemsize, [0, 2, 3])
    with open(prefix + ".bin", "rb") as f:
        assert f.read() == np.arange(1, 7, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def test_reader_api(tmp_path):
    rng = np.random.default_rng(0)
    docs = [[rng.integers(0, 50000, size=rng.integers(0, 40)) for _ in range(rng.integers(1, 4))] for _ in range(30)]
    prefix = str(tmp_path / "random")
    _write(prefix, docs, np.uint16)
    ds = get_indexed_dataset(prefix, data_impl="mmap", skip_warmup=False)
    flat = [seq for doc in docs for seq in doc]
    assert len(ds) == len(flat) and ds.dtype == np.uint16
    assert all(np.array_equal(ds[i], seq) for i, seq in enumerate(flat))
    assert ds.doc_idx.tolist() == np.cumsum([0] + [len(d) for d in docs]).tolist()
    assert ds.sizes.tolist() == [len(s) for s in flat]
    assert [a.tolist() for a in ds[2:5]] == [s.tolist() for s in flat[2:5]]
    assert np.array_equal(ds[-1], flat[-1])
    longest = int(np.argmax(ds.sizes))
    assert np.array_equal(ds.get(longest, offset=3, length=5), flat[longest][3:8])
    assert np.array_equal(ds.get(longest, offset=3), flat[longest][3:])
    with pytest.raises(IndexError):
        ds.get(longest, offset=1, length=len(flat[longest]))
    with pytest.raises(IndexError):
        ds[len(ds)]
    # Pickling (DataLoader workers under "spawn") reopens the files instead of copying them.
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 1000 and np.array_equal(clone[7], ds[7])
    assert MMapIndexedDataset.exists(prefix) and not MMapIndexedDataset.exists(prefix + "x")


def test_merge_file(tmp_path):
    first, second, merged = (str(tmp_path / n) for n in ("a", "b", "m"))
    _write(first, DOCS, np.int32)
    _write(second, [[[7, 8]], [[9], [10, 11]]], np.int32)
    builder = MMapIndexedDatasetBuilder(merged + ".bin", dtype=np.int32)
    builder.merge_file_(first)
    builder.merge_file_(second)
    builder.finalize(merged + ".idx")
    ds = MMapIndexedDataset(merged)
    assert [ds[i].tolist() for i in range(len(ds))] == [[1, 2, 3], [4, 5], [6], [7, 8], [9], [10, 11]]
    assert ds.doc_idx.tolist() == [0, 2, 3, 4, 6]


def test_best_fitting_dtype():
    assert best_fitting_dtype(50257) == np.uint16
    assert best_fitting_dtype(65499) == np.uint16
    assert best_fitting_dtype(65500) == np.int32
    assert best_fitting_dtype(None) == np.int32


def test_builder_refuses_ids_outside_its_dtype(tmp_path):
    builder = MMapIndexedDatasetBuilder(str(tmp_path / "x.bin"), dtype=np.uint16)
    with pytest.raises(ValueError, match="do not fit"):
        builder.add_item(np.array([70000]))
    with pytest.raises(ValueError, match="indexed datasets store"):
        MMapIndexedDatasetBuilder(str(tmp_path / "y.bin"), dtype=np.complex64)


def _error(prefix):
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        MMapIndexedDataset(prefix)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_corrupt_or_missing_files_give_one_clear_line(tmp_path):
    prefix = str(tmp_path / "good")
    _write(prefix, DOCS, np.int32)
    index = open(prefix + ".idx", "rb").read()
    data = open(prefix + ".bin", "rb").read()

    def variant(name, idx_bytes=index, bin_bytes=data):
        path = str(tmp_path / name)
        if idx_bytes is not None:
            open(path + ".idx", "wb").write(idx_bytes)
        if bin_bytes is not None:
            open(path + ".bin", "wb").write(bin_bytes)
        return path

    assert "missing.idx not found" in _error(str(tmp_path / "missing"))
    assert "nobin.bin not found" in _error(variant("nobin", bin_bytes=None))
    assert "bad magic" in _error(variant("magic", idx_bytes=b"TNTIDX\x00\x00" + index[8:]))
    assert "index version 2" in _error(variant("version", idx_bytes=index[:9] + struct.pack("<Q", 2) + index[17:]))
    assert "unknown dtype code 9" in _error(variant("code", idx_bytes=index[:17] + b"\x09" + index[18:]))
    assert "truncated" in _error(variant("short_idx", idx_bytes=index[:-8]))
    assert "truncated" in _error(variant("header_only", idx_bytes=index[:20]))
    assert "truncated" in _error(variant("short_bin", bin_bytes=data[:-4]))
    assert "preprocess_data.py" in _error(variant("empty", idx_bytes=b""))
    with pytest.raises(ValueError, match="data_impl='lazy' is not supported"):
        get_indexed_dataset(prefix, data_impl="lazy")


# ---- the command-line tools ----------------------------------------------------------


def _run_tool(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """30 real Shakespeare documents written by tools/make_shakespeare_corpus.py."""
    path = tmp_path_factory.mktemp("corpus") / "shakespeare.jsonl"
    proc = _run_tool(
        "tools/make_shakespeare_corpus.py", "--output", str(path), "--max-docs", "30", "--doc-chars", "1500"
    )
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(docs) == 30 and all(d["text"].strip() and d["title"] for d in docs)
    return path, [d["text"] for d in docs]


def test_preprocess_gpt2_documents_with_two_workers(corpus, tmp_path):
    path, texts = corpus
    prefix = str(tmp_path / "shk")
    proc = _run_tool("tools/preprocess_data.py", "--input", str(path), "--json-keys", "text",
                     "--tokenizer-name", "GPT2Tokenizer", "--vocab-file", gpt2_vocab_files()[0],
                     "--merges-file", gpt2_vocab_files()[1], "--append-eod",
                     "--output-prefix", prefix, "--workers", "2", "--log-interval", "5")
    assert proc.returncode == 0, proc.stderr
    assert "30 documents" in proc.stdout
    ds = MMapIndexedDataset(prefix + "_text_document")
    tokenizer = GPT2Tokenizer(*gpt2_vocab_files())
    assert len(ds) == 30 and ds.doc_idx.tolist() == list(range(31)) and ds.dtype == np.uint16
    for i, text in enumerate(texts):
        assert ds[i].tolist() == tokenizer.encode(text) + [50256]
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


@pytest.fixture(scope="module")
def preprocess_tool():
    """tools/preprocess_data.py as a module, for checks that need no separate process."""
    spec = importlib.util.spec_from_file_location("preprocess_data", os.path.join(REPO, "tools", "preprocess_data.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_preprocess_bert_sentences(corpus, tmp_path, preprocess_tool):
    path, texts = corpus
    prefix = str(tmp_path / "shk")
    proc = _run_tool("tools/preprocess_data.py", "--input", str(path), "--tokenizer-name", "BertTokenizer",
                     "--split-sentences", "--output-prefix", prefix, "--workers", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    ds = MMapIndexedDataset(prefix + "_text_sentence")
    tokenizer = BertTokenizer(bert_vocab_file())
    assert len(ds.doc_idx) == 31
    for d, text in enumerate(texts):
        expected = [tokenizer.encode(s, add_special_tokens=False) for s in preprocess_tool.split_sentences(text)]
        expected = [e for e in expected if e]
        got = [ds[i].tolist() for i in range(ds.doc_idx[d], ds.doc_idx[d + 1])]
        assert got == expected
    assert max(len(e) for e in expected) < 200  # sentences, not whole documents


def test_split_sentences(preprocess_tool):
    text = "Who's there? Nay, answer me: stand.\nLong live the king!  'Tis now struck twelve."
    assert preprocess_tool.split_sentences(text) == [
        "Who's there?", "Nay, answer me: stand.", "Long live the king!", "'Tis now struck twelve."
    ]


def test_preprocess_errors_are_one_line(tmp_path, preprocess_tool, capsys):
    def run(*args):
        code = preprocess_tool.main([*args, "--output-prefix", str(tmp_path / "out"), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1
        return err

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    assert "line 2 is not valid JSON" in run("--input", str(bad), "--tokenizer-name", "GPT2Tokenizer")
    # Nothing half-written is left behind.
    assert not [n for n in os.listdir(tmp_path) if n.startswith("out")]
    assert "does not exist" in run("--input", str(tmp_path / "none.jsonl"), "--tokenizer-name", "BertTokenizer")
    bad.write_text('{"body": "no text key"}\n')
    assert "has no key 'text'" in run("--input", str(bad), "--tokenizer-name", "BertTokenizer")
    message = run("--input", str(bad), "--tokenizer-name", "BertTokenizer", "--append-eod")
    assert "with an end-of-document token" in message
    assert "does not exist" in run("--input", str(bad), "--tokenizer-name", "BertTokenizer",
                                   "--vocab-file", str(tmp_path / "vocab.txt"))
