"""LiBai's quick-start configs in configs/ load and train: each shrunk by command-line
overrides, 3 iterations through `tools/train.sh` on one process, then its evaluation."""
import os

import pytest

from tests.helpers.runs import REPO, read_metrics, train_sh

SMALL_NLP = [
    "model.cfg.hidden_layers=2",
    "model.cfg.hidden_size=64",
    "model.cfg.num_attention_heads=4",
    "train.dist.pipeline_num_layers=2",
    "train.train_micro_batch_size=2",
    "train.test_micro_batch_size=4",
    "train.train_iter=3",
    "train.train_epoch=0",
    "train.log_period=1",
    "train.evaluation.eval_period=3",
    "train.evaluation.eval_iter=3",
    "train.checkpointer.period=100",
    "train.amp.enabled=False",
    "dataloader.train.num_workers=0",
]
SEQ32 = ["dataloader.train.dataset.0.max_seq_length=32", "dataloader.test.0.dataset.max_seq_length=32", "+dataloader.test.0.num_workers=0"]
CASES = {
    "gpt2_pretrain": ("configs/gpt2_pretrain.py", ["model.cfg.ffn_hidden_size=128", "model.cfg.max_seq_length=32", *SEQ32]),
    "bert_large_pretrain": (
        "configs/bert_large_pretrain.py",
        ["model.cfg.intermediate_size=128", "model.cfg.max_position_embeddings=32", *SEQ32],
    ),
    "t5_large_pretrain": (
        "configs/t5_large_pretrain.py",
        ["model.cfg.intermediate_size=128", "model.cfg.max_position_embeddings=32", "train.dist.pipeline_num_layers=4",
         *SEQ32, "dataloader.train.dataset.0.max_seq_length_dec=16", "dataloader.test.0.dataset.max_seq_length_dec=16"],
    ),
    "roberta_pretrain": (
        "configs/roberta_pretrain.py",
        # LiBai's config fixes 8 data-parallel ranks; 34 positions hold 32 tokens after <pad> = 1.
        ["train.dist.data_parallel_size=1", "model.cfg.intermediate_size=128", "model.cfg.max_position_embeddings=34",
         *SEQ32],
    ),
    "bert_classification": (
        "tests/configs/libai/bert_classification_folio.py",
        ["model.cfg.intermediate_size=128", "model.cfg.max_position_embeddings=32", "train.activation_checkpoint.enabled=True"],
    ),
}


@pytest.fixture(scope="module")
def shakespeare_data():
    """The indexed corpora the configs' data sections name (built once per machine)."""
    from projects.shakespeare.data import shakespeare_indexed_dataset

    shakespeare_indexed_dataset("data/shakespeare", "GPT2Tokenizer")
    shakespeare_indexed_dataset("data/shakespeare_bert", "BertTokenizer", split_sentences=True, append_eod=False)
    shakespeare_indexed_dataset("data/shakespeare_roberta", "RobertaTokenizer", split_sentences=True, append_eod=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_quickstart_config_trains_and_evaluates(shakespeare_data, tmp_path, name):
    config, overrides = CASES[name]
    out = str(tmp_path / name)
    train_sh(1, out, *SMALL_NLP, *overrides, config=os.path.join(REPO, config))
    metrics = read_metrics(out)
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [0, 1, 2]
    evaluated = {k for m in metrics for k in m if "PPL" in k or "Acc@1" in k}
    assert evaluated, f"{name}: no evaluation result in metrics.json"
