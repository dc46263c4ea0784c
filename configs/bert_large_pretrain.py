"""LiBai's quick-start BERT pretraining config (`configs/bert_large_pretrain.py`), here.

An 8-layer BERT (hidden 768, 16 heads) with masked-LM and sentence-order losses on the
sentence-split indexed data of configs/common/data/bert_dataset.py (its docstring shows how
to make it), evaluated by perplexity on its test section:
`bash tools/train.sh tools/train_net.py configs/bert_large_pretrain.py 8`.
"""
from libai.config import LazyCall
from libai.evaluation import PPLEvaluator

from .common.data.bert_dataset import dataloader, tokenization
from .common.models.bert import pretrain_model as model
from .common.models.graph import graph
from .common.optim import optim
from .common.train import train

model.cfg.num_attention_heads = 16
model.cfg.hidden_size = 768
model.cfg.hidden_layers = 8

train.input_placement_device = "cpu"
train.dist.pipeline_num_layers = model.cfg.hidden_layers
train.train_micro_batch_size = 16
train.amp.enabled = True
for dataset in dataloader.train.dataset:
    dataset.max_seq_length = model.cfg.max_position_embeddings
dataloader.test[0].dataset.max_seq_length = model.cfg.max_position_embeddings

train.evaluation.evaluator = LazyCall(PPLEvaluator)()
train.output_dir = "output/bert_output"
__all__ = ["dataloader", "graph", "model", "optim", "tokenization", "train"]
