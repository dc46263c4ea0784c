"""LiBai's quick-start BERT classification config (`configs/bert_classification.py`), here.

`BertForClassification` (2 labels, classifier dropout 0.1) on a 12-layer BERT-base, with AMP
and activation checkpointing. As in LiBai, the data section is the BERT pretraining one and
only names the model's inputs; a real run gives `dataloader.train` a classification dataset
(e.g. projects/shakespeare/bert_classification.py).
"""
from libai.config import LazyCall
from libai.models.bert_model import BertForClassification

from .common.data.bert_dataset import dataloader, tokenization
from .common.models.bert import cfg as bert_cfg
from .common.models.graph import graph
from .common.optim import optim
from .common.train import train

bert_cfg.num_labels = 2
bert_cfg.classifier_dropout = 0.1
model = LazyCall(BertForClassification)(cfg=bert_cfg)

model.cfg.vocab_size = 30522  # the English WordPiece vocabulary shipped here (LiBai: 21128, Chinese)
model.cfg.intermediate_size = 3072
model.cfg.num_attention_heads = 12
model.cfg.hidden_layers = 12
model.cfg.hidden_size = 768

train.amp.enabled = True
train.activation_checkpoint.enabled = True
train.dist.pipeline_num_layers = model.cfg.hidden_layers
train.output_dir = "output/bert_classification_output"
__all__ = ["dataloader", "graph", "model", "optim", "tokenization", "train"]
