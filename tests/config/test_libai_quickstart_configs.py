"""LiBai's quick-start configs in configs/ load and train: each shrunk by command-line
overrides, 3 iterations through `tools/train.sh` on one process, then its evaluation.

The NLP configs read the Shakespeare corpora made by `tools/preprocess_data.py`; the vision
configs read a generated ImageNet-style folder and generated CIFAR-100 files, at the configs'
own image sizes (224 and 256) with the models made narrow and shallow.
"""
import os

import pytest

from tests.helpers.image_data import write_cifar100_python, write_image_folder
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


VISION = [
    "train.train_micro_batch_size=2",
    "train.test_micro_batch_size=2",
    "train.num_accumulation_steps=1",
    "train.train_iter=3",
    "train.train_epoch=0",
    "train.log_period=1",
    "train.evaluation.eval_period=3",
    "train.evaluation.eval_iter=2",
    "train.checkpointer.period=100",
    "train.amp.enabled=False",
    "train.dist.data_parallel_size=1",
    "dataloader.train.num_workers=0",
    "dataloader.test.0.num_workers=0",
]
SWIN = ["model.cfg.embed_dim=16", "model.cfg.depths=[2,2,1,1]", "model.cfg.num_heads=[1,2,2,4]",
        "train.dist.pipeline_num_layers=6"]
VISION_CASES = {
    "vit_imagenet": ("imagenet", ["model.cfg.depth=2", "model.cfg.embed_dim=32", "model.cfg.num_heads=2",
                                  "train.dist.pipeline_num_layers=2"]),
    "resmlp_imagenet": ("imagenet", ["model.cfg.depth=2", "model.cfg.embed_dim=32", "train.dist.pipeline_num_layers=2"]),
    "swin_imagenet": ("imagenet", SWIN),
    "swin_cifar100": ("cifar100", SWIN),
    "swinv2_imagenet": ("imagenet", SWIN),
    "swinv2_cifar100": ("cifar100", SWIN),
}


@pytest.fixture(scope="module")
def image_roots(tmp_path_factory) -> dict:
    """{"imagenet": ROOT, "cifar100": ROOT} of small generated data."""
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root / "imagenet", classes=2, per_class=3, size=40)
    write_cifar100_python(root / "cifar", n_train=6, n_test=4)
    return {"imagenet": str(root / "imagenet"), "cifar100": str(root / "cifar")}


@pytest.mark.parametrize("name", sorted(VISION_CASES))
def test_vision_quickstart_config_trains_and_evaluates(image_roots, tmp_path, name):
    data, overrides = VISION_CASES[name]
    root = image_roots[data]
    out = str(tmp_path / name)
    train_sh(1, out, *VISION, *overrides, f"dataloader.train.dataset.0.root={root}",
             f"dataloader.test.0.dataset.root={root}", config=os.path.join(REPO, f"configs/{name}.py"))
    metrics = read_metrics(out)
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [0, 1, 2]
    assert any("Acc@1" in k for m in metrics for k in m), f"{name}: no evaluation result in metrics.json"


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
