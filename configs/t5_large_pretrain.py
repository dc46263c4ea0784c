"""LiBai's quick-start T5 pretraining config (`configs/t5_large_pretrain.py`), here.

A T5 of 6 encoder and 6 decoder layers (hidden 384, 12 heads) with span corruption on the
sentence-split indexed data of configs/common/data/t5_dataset.py (its docstring shows how to
make it), evaluated by perplexity on its test section:
`bash tools/train.sh tools/train_net.py configs/t5_large_pretrain.py 8`.
"""
from libai.config import LazyCall
from libai.evaluation import PPLEvaluator

from .common.data.t5_dataset import dataloader, tokenization
from .common.models.graph import graph
from .common.models.t5 import pretrain_model as model
from .common.optim import optim
from .common.train import train

model.cfg.num_attention_heads = 12
model.cfg.hidden_size = 384
model.cfg.hidden_layers = 6
# BERT's 30,522 WordPiece tokens + [BOS], [EOS] and 100 sentinels, padded to 128 x 2 (LiBai's
# Chinese vocabulary fits its default size; the English one shipped here does not).
model.cfg.vocab_size = 30720

train.input_placement_device = "cpu"
train.dist.pipeline_num_layers = 2 * model.cfg.hidden_layers
train.train_micro_batch_size = 16
train.amp.enabled = True

train.evaluation.evaluator = LazyCall(PPLEvaluator)()
train.output_dir = "./output/t5_output"
__all__ = ["dataloader", "graph", "model", "optim", "tokenization", "train"]
