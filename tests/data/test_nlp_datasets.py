"""GPT-2, BERT and T5 datasets over indexed data, train/valid/test splits and NLP loaders."""
import re

import numpy as np
import pytest
import torch

from libai.data import Instance, build_nlp_train_val_test_loader
from libai.data.build import train_valid_test_ranges
from libai.data.datasets import BertDataset, GPT2Dataset, RobertaDataset, T5Dataset
from libai.data.indexed import MMapIndexedDataset, MMapIndexedDatasetBuilder
from libai.tokenizer import BertTokenizer, GPT2Tokenizer, bert_vocab_file, gpt2_vocab_files, shakespeare_texts
from libai.tokenizer import RobertaTokenizer, roberta_vocab_files

BERT_FIELDS = ["input_ids", "attention_mask", "tokentype_ids", "ns_labels", "lm_labels", "loss_mask"]
T5_FIELDS = [
    "encoder_input_ids",
    "decoder_input_ids",
    "encoder_attn_mask",
    "decoder_attn_mask",
    "encoder_decoder_attn_mask",
    "lm_labels",
    "loss_mask",
]


def _write(prefix, docs, dtype=np.uint16):
    builder = MMapIndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for doc in docs:
        for seq in doc:
            builder.add_item(np.asarray(seq))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")
    return MMapIndexedDataset(prefix)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nlp")


@pytest.fixture(scope="module")
def stream_docs(data_dir):
    """Synthetic documents whose tokens say where they come from: doc d, position p -> d * 1000 + p."""
    rng = np.random.default_rng(0)
    docs = [[d * 1000 + np.arange(rng.integers(5, 60))] for d in range(20)]
    return docs, _write(str(data_dir / "stream"), docs)


@pytest.fixture(scope="module")
def bert_tokenizer():
    return BertTokenizer(bert_vocab_file())


@pytest.fixture(scope="module")
def t5_tokenizer():
    sentinels = [f"<extra_id_{i}>" for i in range(100)]
    return BertTokenizer(bert_vocab_file(), bos_token="[BOS]", eos_token="[EOS]", additional_special_tokens=sentinels)


@pytest.fixture(scope="module")
def shakespeare_paragraphs():
    """~150 real paragraphs (blank-line separated) of one play, each a list of lines."""
    text = shakespeare_texts()[0].read_text()
    paragraphs = [p.strip().splitlines() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [p for p in paragraphs if len(p) >= 2][20:170]


@pytest.fixture(scope="module")
def sentences(data_dir, bert_tokenizer, shakespeare_paragraphs):
    """BERT-tokenized sentence data: a document per paragraph, a sequence per line."""
    docs = [[bert_tokenizer.encode(line, add_special_tokens=False) for line in p] for p in shakespeare_paragraphs]
    return _write(str(data_dir / "sentences"), docs)


@pytest.fixture(scope="module")
def documents(data_dir, bert_tokenizer, shakespeare_paragraphs):
    """The same text, a single sequence per document (no sentence split)."""
    docs = [[bert_tokenizer.encode(" ".join(p), add_special_tokens=False)] for p in shakespeare_paragraphs]
    return _write(str(data_dir / "documents"), docs)


@pytest.fixture(scope="module")
def roberta_tokenizer(data_dir):
    return RobertaTokenizer(*roberta_vocab_files(data_dir))


@pytest.fixture(scope="module")
def roberta_sentences(data_dir, roberta_tokenizer, shakespeare_paragraphs):
    """RoBERTa-tokenized sentence data: a document per paragraph, a sequence per line."""
    docs = [[roberta_tokenizer.encode(line) for line in p] for p in shakespeare_paragraphs]
    return _write(str(data_dir / "roberta_sentences"), docs)


# ---- GPT-2 -----------------------------------------------------------------------------


def test_gpt_windows_are_contiguous_and_cover_the_stream(stream_docs):
    docs, indexed = stream_docs
    stream = np.concatenate([seq for doc in docs for seq in doc])
    ds = GPT2Dataset(indexed_dataset=indexed, max_seq_length=16)
    assert len(ds) == (len(stream) - 1) // 16
    for i in range(len(ds)):
        sample = ds[i]
        window = stream[i * 16 : i * 16 + 17]
        assert sample.input_ids.tensor.tolist() == window[:-1].tolist()
        assert sample.labels.tensor.tolist() == window[1:].tolist()
    assert list(sample.get_fields()) == ["input_ids", "labels"]
    assert sample.input_ids.tensor.dtype == sample.labels.tensor.dtype == torch.long
    assert (sample.input_ids.placement_idx, sample.labels.placement_idx) == (0, -1)
    # The windows cover the stream up to the last full one.
    assert len(ds) * 16 + 1 > len(stream) - 16


def test_gpt_later_epochs_shuffle_documents(stream_docs, data_dir):
    docs, indexed = stream_docs
    total = sum(len(doc[0]) for doc in docs)
    ds = GPT2Dataset(data_prefix=str(data_dir / "stream"), max_seq_length=10, max_num_samples=3 * total // 10, seed=7)
    assert len(ds) == 3 * total // 10 and ds.num_epochs == 4
    stream = np.concatenate([ds.sample_tokens(i)[:-1] for i in range(len(ds))])

    def doc_order(tokens):
        starts = np.flatnonzero(tokens % 1000 == 0)
        return (tokens[starts] // 1000).tolist()

    first, second, third = (doc_order(stream[e * total : (e + 1) * total]) for e in range(3))
    assert first == list(range(20))
    assert sorted(second) == sorted(third) == list(range(20)) and second != first and third != second
    same = GPT2Dataset(indexed_dataset=indexed, max_seq_length=10, max_num_samples=len(ds), seed=7)
    other = GPT2Dataset(indexed_dataset=indexed, max_seq_length=10, max_num_samples=len(ds), seed=8)
    last = len(ds) - 1
    assert np.array_equal(same.sample_tokens(last), ds.sample_tokens(last))
    assert not np.array_equal(other.sample_tokens(last), ds.sample_tokens(last))


def test_gpt_errors(stream_docs, data_dir, bert_tokenizer):
    _, indexed = stream_docs
    with pytest.raises(ValueError, match="fewer than max_seq_length"):
        GPT2Dataset(indexed_dataset=indexed, max_seq_length=10_000)
    with pytest.raises(ValueError, match="needs data_prefix or indexed_dataset"):
        GPT2Dataset()
    with pytest.raises(FileNotFoundError, match="not found"):
        GPT2Dataset(data_prefix=str(data_dir / "nothing"))
    large_ids = _write(str(data_dir / "large_ids"), [[np.arange(40000, 40020)]])
    with pytest.raises(ValueError, match="holds token id 40019 but the tokenizer has 30522 tokens"):
        GPT2Dataset(tokenizer=bert_tokenizer, indexed_dataset=large_ids, max_seq_length=4)


# ---- BERT ------------------------------------------------------------------------------


def _check_bert_sample(sample, tok, max_len, binary_head=True):
    assert list(sample.get_fields()) == BERT_FIELDS
    t = {k: v.tensor for k, v in sample.get_fields().items()}
    assert all(t[k].shape == (max_len,) for k in BERT_FIELDS if k != "ns_labels") and t["ns_labels"].shape == ()
    assert t["loss_mask"].dtype == torch.float32
    assert all(t[k].dtype == torch.long for k in BERT_FIELDS if k != "loss_mask")
    assert [sample.get(k).placement_idx for k in BERT_FIELDS] == [0, "all", 0, -1, -1, -1]
    labels, n = t["lm_labels"], int(t["attention_mask"].sum())
    assert t["attention_mask"][:n].eq(1).all() and t["attention_mask"][n:].eq(0).all()
    seps = (labels[:n] == tok.sep_token_id).nonzero().flatten().tolist()
    assert labels[0] == tok.cls_token_id and seps[-1] == n - 1 and len(seps) == (2 if binary_head else 1)
    assert t["input_ids"][n:].eq(tok.pad_token_id).all() and labels[n:].eq(tok.pad_token_id).all()
    expected_types = torch.zeros(max_len, dtype=torch.long)
    expected_types[seps[0] + 1 : n] = 1
    assert torch.equal(t["tokentype_ids"], expected_types)
    predicted = t["loss_mask"].bool()
    assert not predicted[[0, *seps]].any() and not predicted[n:].any() and predicted.any()
    assert torch.equal(t["input_ids"][~predicted], labels[~predicted])


def test_bert_fields_and_layout(sentences, bert_tokenizer):
    ds = BertDataset(tokenizer=bert_tokenizer, indexed_dataset=sentences, max_seq_length=64)
    for i in range(0, len(ds), max(1, len(ds) // 50)):
        _check_bert_sample(ds[i], bert_tokenizer, 64)
    one_segment = BertDataset(tokenizer=bert_tokenizer, indexed_dataset=sentences, max_seq_length=64, binary_head=False)
    sample = one_segment[3]
    _check_bert_sample(sample, bert_tokenizer, 64, binary_head=False)
    assert sample.ns_labels.tensor.item() == 0


def test_bert_on_unsplit_documents(documents, bert_tokenizer):
    ds = BertDataset(tokenizer=bert_tokenizer, indexed_dataset=documents, max_seq_length=48, seed=3)
    assert len(ds) > 50
    for i in range(0, len(ds), 7):
        _check_bert_sample(ds[i], bert_tokenizer, 48)


def test_bert_masking_rates_over_10000_samples(sentences, bert_tokenizer):
    ds = BertDataset(tokenizer=bert_tokenizer, indexed_dataset=sentences, max_seq_length=32, max_num_samples=10_000)
    predicted = candidates = masked = kept = ns = 0
    mask_id = bert_tokenizer.mask_token_id
    for i in range(len(ds)):
        sample = ds[i]
        inputs, labels = sample.input_ids.tensor, sample.lm_labels.tensor
        chosen = sample.loss_mask.tensor.bool()
        candidates += int(sample.attention_mask.tensor.sum()) - 3
        predicted += int(chosen.sum())
        masked += int((inputs[chosen] == mask_id).sum())
        kept += int((inputs[chosen] == labels[chosen]).sum())
        ns += int(sample.ns_labels.tensor)
    assert abs(predicted / candidates - 0.15) < 0.005
    assert abs(masked / predicted - 0.8) < 0.015
    assert abs(kept / predicted - 0.1) < 0.01
    assert abs((predicted - masked - kept) / predicted - 0.1) < 0.01
    assert abs(ns / len(ds) - 0.5) < 0.02


def test_bert_is_deterministic_per_seed_and_index(sentences, bert_tokenizer):
    def inputs(ds, i):
        return ds[i].input_ids.tensor.tolist()

    a = BertDataset(tokenizer=bert_tokenizer, indexed_dataset=sentences, max_seq_length=64, seed=5)
    b = BertDataset(tokenizer=bert_tokenizer, indexed_dataset=sentences, max_seq_length=64, seed=5)
    c = BertDataset(tokenizer=bert_tokenizer, indexed_dataset=sentences, max_seq_length=64, seed=6)
    assert [inputs(a, i) for i in (9, 2, 9)] == [inputs(b, i) for i in (9, 2, 9)]
    assert any(inputs(a, i) != inputs(c, i) for i in range(5))


def test_bert_errors(sentences, stream_docs, bert_tokenizer, data_dir):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        BertDataset(indexed_dataset=sentences)
    with pytest.raises(ValueError, match="too short"):
        BertDataset(tokenizer=bert_tokenizer, indexed_dataset=sentences, max_seq_length=4)
    # GPT-2-tokenized text: ids past BERT's vocabulary.
    ids = GPT2Tokenizer(*gpt2_vocab_files()).encode(" Romeo, Romeo! wherefore art thou Romeo?")
    assert max(ids) >= len(bert_tokenizer)
    gpt2_data = _write(str(data_dir / "gpt2_sentences"), [[ids, ids]])
    with pytest.raises(ValueError, match="preprocess the data with the tokenizer of this config"):
        BertDataset(tokenizer=bert_tokenizer, indexed_dataset=gpt2_data)


# ---- T5 --------------------------------------------------------------------------------


# ---- RoBERTa ---------------------------------------------------------------------------


def test_roberta_samples_are_masked_lm_only(roberta_sentences, roberta_tokenizer):
    tok = roberta_tokenizer
    ds = RobertaDataset(tokenizer=tok, indexed_dataset=roberta_sentences, max_seq_length=40, max_num_samples=2000)
    predicted = candidates = masked = 0
    for i in range(len(ds)):
        sample = ds[i]
        fields = ["input_ids", "attention_mask", "tokentype_ids", "lm_labels", "loss_mask"]
        assert list(sample.get_fields()) == fields  # RobertaForPreTraining's arguments
        t = {k: v.tensor for k, v in sample.get_fields().items()}
        labels, n = t["lm_labels"], int(t["attention_mask"].sum())
        assert labels[0] == tok.cls_token_id == 0 and labels[n - 1] == tok.sep_token_id == 2
        assert not (labels[1 : n - 1] == tok.sep_token_id).any()  # one text, no sentence pair
        assert t["input_ids"][n:].eq(1).all() and t["tokentype_ids"].eq(0).all()
        chosen = t["loss_mask"].bool()
        assert not chosen[[0, n - 1]].any() and not chosen[n:].any()
        assert torch.equal(t["input_ids"][~chosen], labels[~chosen])
        candidates += n - 2
        predicted += int(chosen.sum())
        masked += int((t["input_ids"][chosen] == tok.mask_token_id).sum())
    assert abs(predicted / candidates - 0.15) < 0.01
    assert abs(masked / predicted - 0.8) < 0.03
    # A sample depends only on (seed, idx).
    again = RobertaDataset(tokenizer=tok, indexed_dataset=roberta_sentences, max_seq_length=40, max_num_samples=2000)
    assert torch.equal(again[7].input_ids.tensor, ds[7].input_ids.tensor)


def test_roberta_masking_style_must_be_bert(roberta_sentences, roberta_tokenizer):
    with pytest.raises(ValueError, match="masking_style 't5' is not supported: use 'bert'"):
        RobertaDataset(tokenizer=roberta_tokenizer, indexed_dataset=roberta_sentences, masking_style="t5")


def _reconstruct(sample, tokenizer):
    """The original tokens from the encoder input with each sentinel replaced by its decoder span."""
    sentinels = set(tokenizer.additional_special_tokens_ids)
    n_enc = int(sample.encoder_attn_mask.tensor[0].sum())
    n_dec = int(sample.loss_mask.tensor.sum())
    encoder = sample.encoder_input_ids.tensor[:n_enc].tolist()
    labels = sample.lm_labels.tensor[:n_dec].tolist()
    assert labels[-1] == tokenizer.eos_token_id and labels[0] in sentinels
    spans, current = {}, None
    for token in labels[:-1]:
        if token in sentinels:
            current = spans.setdefault(token, [])
        else:
            current.append(token)
    out = []
    for token in encoder:
        out += spans.pop(token) if token in sentinels else [token]
    assert not spans  # every span was used once
    return out


def test_t5_fields_masks_and_reconstruction(sentences, t5_tokenizer):
    ds = T5Dataset(tokenizer=t5_tokenizer, indexed_dataset=sentences, max_seq_length=96, max_seq_length_dec=32)
    noise = total = 0
    for i in range(0, len(ds), max(1, len(ds) // 60)):
        sample = ds[i]
        assert list(sample.get_fields()) == T5_FIELDS
        t = {k: v.tensor for k, v in sample.get_fields().items()}
        shapes = [(96,), (32,), (96, 96), (32, 32), (32, 96), (32,), (32,)]
        assert [tuple(t[k].shape) for k in T5_FIELDS] == shapes
        assert [t[k].dtype for k in T5_FIELDS] == [torch.long] * 2 + [torch.bool] * 3 + [torch.long, torch.float32]
        assert [sample.get(k).placement_idx for k in T5_FIELDS] == [0, 0, "all", "all", "all", -1, -1]
        enc_valid = t["encoder_input_ids"] != t5_tokenizer.pad_token_id
        dec_valid = t["loss_mask"].bool()
        assert torch.equal(t["encoder_attn_mask"], enc_valid[:, None] & enc_valid[None, :])
        causal = torch.ones(32, 32).tril().bool()
        assert torch.equal(t["decoder_attn_mask"], causal & dec_valid[:, None] & dec_valid[None, :])
        assert torch.equal(t["encoder_decoder_attn_mask"], dec_valid[:, None] & enc_valid[None, :])
        n_dec = int(dec_valid.sum())
        assert t["decoder_input_ids"][0] == t5_tokenizer.bos_token_id
        assert torch.equal(t["decoder_input_ids"][1:n_dec], t["lm_labels"][: n_dec - 1])
        restored = _reconstruct(sample, t5_tokenizer)
        original = ds.sample_tokens(i).tolist()
        assert restored == original
        assert t5_tokenizer.decode(restored) == t5_tokenizer.decode(original)
        sentinel_count = int(np.isin(t["lm_labels"].numpy(), t5_tokenizer.additional_special_tokens_ids).sum())
        noise += n_dec - 1 - sentinel_count
        total += len(original)
    assert abs(noise / total - 0.15) < 0.02


def test_t5_needs_sentinels(sentences, bert_tokenizer):
    with pytest.raises(ValueError, match="additional_special_tokens"):
        T5Dataset(tokenizer=bert_tokenizer, indexed_dataset=sentences)


# ---- splits and loaders ----------------------------------------------------------------


def test_megatron_split_rounding():
    assert train_valid_test_ranges(1000, [949, 50, 1]) == (range(0, 949), range(949, 999), range(999, 1000))
    assert train_valid_test_ranges(10, [1.0]) == (range(0, 10), range(10, 10), range(10, 10))
    for split in ([949, 50, 1], [1, 1, 1], [8, 1, 1], [0, 1, 0], [3, 3], [0.5, 0.5, 0.0]):
        for size in range(0, 120):
            ranges = train_valid_test_ranges(size, split)
            assert [i for r in ranges for i in r] == list(range(size)), (size, split)
    with pytest.raises(ValueError, match="up to 3 non-negative weights"):
        train_valid_test_ranges(10, [1, -1])
    with pytest.raises(ValueError, match="up to 3 non-negative weights"):
        train_valid_test_ranges(10, [0, 0, 0])


@pytest.fixture(scope="module")
def one_process_group():
    from libai.utils import distributed as dist

    dist.setup_dist_util({}, device="cpu")


def _batches(loader):
    """Number of batches of a one-pass loader."""
    return sum(1 for _ in loader)


def _expected_batches(num_samples, batch_size):
    # The test sampler pads the last batch (the evaluator drops the padding).
    return -(-num_samples // batch_size)


def test_train_val_test_loaders(one_process_group, stream_docs, sentences, t5_tokenizer, bert_tokenizer):
    _, indexed = stream_docs
    gpt_a = GPT2Dataset(indexed_dataset=indexed, max_seq_length=8)
    gpt_b = GPT2Dataset(indexed_dataset=indexed, max_seq_length=8, max_num_samples=40)
    train, valid, test = build_nlp_train_val_test_loader(
        [gpt_a, gpt_b], splits=[[8, 1, 1]], weights=[1.0, 1.0], train_batch_size=4, test_batch_size=3, num_workers=0
    )
    batch = next(iter(train))
    assert isinstance(batch, Instance) and tuple(batch.input_ids.tensor.shape) == (4, 8)
    assert batch.labels.placement_idx == -1
    sizes = [train_valid_test_ranges(len(d), [8, 1, 1]) for d in (gpt_a, gpt_b)]
    assert len(train.dataset) == sum(len(r[0]) for r in sizes)
    assert _batches(valid) == _expected_batches(sum(len(r[1]) for r in sizes), 3)
    assert _batches(test) == _expected_batches(sum(len(r[2]) for r in sizes), 3)
    assert tuple(next(iter(valid)).input_ids.tensor.shape) == (3, 8)
    # Evaluation results are keyed by these names ("validation/PPL").
    assert (valid.dataset.dataset_name, test.dataset.dataset_name) == ("validation", "test")

    bert = BertDataset(tokenizer=bert_tokenizer, indexed_dataset=sentences, max_seq_length=32)
    train, valid, test = build_nlp_train_val_test_loader(
        bert, splits=[[1.0, 0.0, 0.0]], train_batch_size=2, num_workers=0
    )
    assert valid is None and test is None
    batch = next(iter(train))
    assert tuple(batch.input_ids.tensor.shape) == (2, 32) and tuple(batch.ns_labels.tensor.shape) == (2,)

    t5 = T5Dataset(tokenizer=t5_tokenizer, indexed_dataset=sentences, max_seq_length=48, max_seq_length_dec=16)
    train, valid, _ = build_nlp_train_val_test_loader([t5], splits=[[9, 1, 0]], train_batch_size=2, num_workers=0)
    batch = next(iter(train))
    assert tuple(batch.encoder_attn_mask.tensor.shape) == (2, 48, 48)
    assert tuple(batch.encoder_decoder_attn_mask.tensor.shape) == (2, 16, 48)
    assert _batches(valid) == _expected_batches(len(train_valid_test_ranges(len(t5), [9, 1, 0])[1]), 2)


def test_loader_argument_errors(one_process_group, stream_docs):
    _, indexed = stream_docs
    ds = GPT2Dataset(indexed_dataset=indexed, max_seq_length=8)
    with pytest.raises(ValueError, match="splits has 2 entries for 1 datasets"):
        build_nlp_train_val_test_loader(ds, splits=[[1, 0, 0], [1, 0, 0]], num_workers=0)
    with pytest.raises(ValueError, match="weights has 2 entries"):
        build_nlp_train_val_test_loader(ds, splits=[[1, 0, 0]], weights=[1, 1], num_workers=0)
    with pytest.raises(ValueError, match="no training samples"):
        build_nlp_train_val_test_loader(ds, splits=[[0, 1, 0]], num_workers=0)


@pytest.mark.parametrize(
    "name, prefix, lengths, field, shape",
    [
        ("gpt", "stream", dict(max_seq_length=16), "input_ids", (2, 16)),
        ("bert", "sentences", dict(max_seq_length=32), "tokentype_ids", (2, 32)),
        ("t5", "sentences", dict(max_seq_length=48, max_seq_length_dec=16), "decoder_attn_mask", (2, 16, 16)),
        ("roberta", "roberta_sentences", dict(max_seq_length=32), "loss_mask", (2, 32)),
    ],
)
def test_packaged_data_configs_build_loaders(
    one_process_group, stream_docs, sentences, roberta_sentences, data_dir, name, prefix, lengths, field, shape
):
    from libai.config import LazyConfig, get_config, instantiate
    from libai.tokenizer import build_tokenizer

    cfg = get_config(f"common/data/{name}_dataset.py")
    tokenizer = build_tokenizer(cfg.tokenization)
    assert cfg.tokenization.padded_vocab_size % 128 == 0 and cfg.tokenization.padded_vocab_size >= len(tokenizer)
    overrides = []
    for node in ("dataloader.train.dataset.0", "dataloader.test.0.dataset"):
        overrides += [f"{node}.{key}={value}" for key, value in lengths.items()]
        overrides += [f"{node}.data_prefix={data_dir / prefix}", f"{node}.indexed_dataset.data_prefix={data_dir / prefix}"]
    overrides += ["dataloader.train.num_workers=0", "+dataloader.test.0.num_workers=0"]
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    cfg.dataloader.train.train_batch_size = 2  # DefaultTrainer sets it from train.train_micro_batch_size
    cfg.dataloader.train.dataset[0].tokenizer = tokenizer  # what DefaultTrainer does
    train, valid, test = instantiate(cfg.dataloader.train)
    assert tuple(next(iter(train)).get(field).tensor.shape) == shape
    assert valid is not None
    # LiBai's test section: the first 10 samples of the same data, in batches of 4.
    (test_cfg,) = cfg.dataloader.test
    test_cfg.dataset.tokenizer = tokenizer
    loader = instantiate(test_cfg)
    assert len(loader.dataset) == 10
    # Three full batches: the last two rows are padding the evaluator drops.
    batches = list(loader)
    assert [tuple(b.get(field).tensor.shape) for b in batches] == [(4, *shape[1:])] * 3
