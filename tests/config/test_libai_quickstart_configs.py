"""LiBai's quick-start configs in configs/ load and train: each shrunk by command-line
overrides, 3 iterations on one process, then its evaluation. The eleven runs share one
process (tests/helpers/train_in_one_process.py calls `tools/train_net.py`'s `main` for each),
which saves a process start per config; `tools/train.sh` itself is tested elsewhere.

The NLP configs read the Shakespeare corpora made by `tools/preprocess_data.py`; the vision
configs read a generated ImageNet-style folder and generated CIFAR-100 files, at the configs'
own image sizes (224 and 256) with the models made narrow and shallow.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.image_data import write_cifar100_python, write_image_folder
from tests.helpers.runs import REPO, read_metrics

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
def data_roots(tmp_path_factory) -> dict:
    """The Shakespeare corpora the NLP configs name (built once per machine) and small
    generated image data: {"imagenet": ROOT, "cifar100": ROOT}."""
    from projects.shakespeare.data import shakespeare_indexed_dataset

    shakespeare_indexed_dataset("data/shakespeare", "GPT2Tokenizer")
    shakespeare_indexed_dataset("data/shakespeare_bert", "BertTokenizer", split_sentences=True, append_eod=False)
    shakespeare_indexed_dataset("data/shakespeare_roberta", "RobertaTokenizer", split_sentences=True, append_eod=False)
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root / "imagenet", classes=2, per_class=3, size=40)
    write_cifar100_python(root / "cifar", n_train=6, n_test=4)
    return {"imagenet": str(root / "imagenet"), "cifar100": str(root / "cifar")}


def _runs(roots: dict, out: str) -> dict:
    """{name: (config file, overrides)} of the eleven configs, shrunk."""
    runs = {name: (os.path.join(REPO, config), [*SMALL_NLP, *overrides]) for name, (config, overrides) in CASES.items()}
    for name, (data, overrides) in VISION_CASES.items():
        root = roots[data]
        runs[name] = (os.path.join(REPO, f"configs/{name}.py"), [*VISION, *overrides, f"dataloader.train.dataset.0.root={root}",
                                                                 f"dataloader.test.0.dataset.root={root}"])
    return runs


@pytest.fixture(scope="module")
def trained(data_roots, tmp_path_factory) -> str:
    """The folder holding one output folder per config, all trained in one process."""
    out = str(tmp_path_factory.mktemp("quickstart"))
    runs = [[config, os.path.join(out, name), overrides] for name, (config, overrides) in _runs(data_roots, out).items()]
    spec = os.path.join(out, "runs.json")
    with open(spec, "w") as f:
        json.dump(runs, f)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests/helpers/train_in_one_process.py"), spec],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return out


@pytest.mark.parametrize("name", sorted([*CASES, *VISION_CASES]))
def test_quickstart_config_trains_and_evaluates(trained, name):
    out = os.path.join(trained, name)
    error = os.path.join(out, "run_error.txt")
    assert not os.path.exists(error), open(error).read()
    metrics = read_metrics(out)
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [0, 1, 2]
    evaluated = {k for m in metrics for k in m if "PPL" in k or "Acc@1" in k}
    assert evaluated, f"{name}: no evaluation result in metrics.json"
