"""LiBai's quick-start RoBERTa pretraining config (`configs/roberta_pretrain.py`), here.

An 8-layer RoBERTa (hidden 768, 12 heads) with the masked-LM loss on the sentence-split
indexed data of configs/common/data/roberta_dataset.py (its docstring shows how to make
it), evaluated by perplexity on its test section:
`bash tools/train.sh tools/train_net.py configs/roberta_pretrain.py 8`.
"""
from libai.config import LazyCall
from libai.evaluation import PPLEvaluator

from .common.data.roberta_dataset import dataloader, tokenization
from .common.models.graph import graph
from .common.models.roberta import pretrain_model as model
from .common.optim import optim
from .common.train import train

model.cfg.num_attention_heads = 12
model.cfg.hidden_size = 768
model.cfg.hidden_layers = 8

train.input_placement_device = "cpu"

train.dist.data_parallel_size = 8
train.dist.tensor_parallel_size = 1
train.dist.pipeline_parallel_size = 1

train.dist.pipeline_num_layers = model.cfg.hidden_layers

train.train_micro_batch_size = 2

train.amp.enabled = True

# LiBai sets max_seq_length = max_position_embeddings (514), which overflows RoBERTa's
# positions (they start after pad_token_id): 514 positions hold 512 tokens.
for dataset in dataloader.train.dataset:
    dataset.max_seq_length = model.cfg.max_position_embeddings - model.cfg.pad_token_id - 1
dataloader.test[0].dataset.max_seq_length = model.cfg.max_position_embeddings - model.cfg.pad_token_id - 1

train.evaluation.evaluator = LazyCall(PPLEvaluator)()

train.output_dir = "output/roberta_output"
__all__ = ["dataloader", "graph", "model", "optim", "tokenization", "train"]
