"""LiBai's quick-start GPT-2 pretraining config (`configs/gpt2_pretrain.py`), here.

A 6-layer GPT-2 (hidden 384, 16 heads) on the indexed data of configs/common/data/gpt_dataset.py,
evaluated by perplexity on its test section. Make the data once (from the repository root):

    python tools/make_shakespeare_corpus.py --output data/shakespeare.jsonl
    python tools/preprocess_data.py --input data/shakespeare.jsonl --json-keys text \\
        --tokenizer-name GPT2Tokenizer --append-eod --output-prefix data/shakespeare --workers 2

then `bash tools/train.sh tools/train_net.py configs/gpt2_pretrain.py 8`.
"""
from libai.config import LazyCall
from libai.evaluation import PPLEvaluator

from .common.data.gpt_dataset import dataloader, tokenization
from .common.models.gpt import pretrain_model as model
from .common.models.graph import graph
from .common.optim import optim
from .common.train import train

model.cfg.embedding_dropout_prob = 0.1
model.cfg.attention_dropout_prob = 0.1
model.cfg.num_attention_heads = 16
model.cfg.hidden_size = 384
model.cfg.ffn_hidden_size = 1536
model.cfg.hidden_layers = 6
model.cfg.max_seq_length = 1024
# GPT-2's 50,257 tokens padded to a multiple of 128 (configs/common/models/gpt.py keeps
# LiBai's BERT-sized default).
model.cfg.vocab_size = 50304

train.input_placement_device = "cpu"
train.dist.pipeline_num_layers = model.cfg.hidden_layers
for dataset in dataloader.train.dataset:
    dataset.max_seq_length = model.cfg.max_seq_length
dataloader.test[0].dataset.max_seq_length = model.cfg.max_seq_length

optim.lr = 1.5e-4
train.train_micro_batch_size = 4
train.amp.enabled = True
train.evaluation.evaluator = LazyCall(PPLEvaluator)()
train.output_dir = "./output/gpt2_output"
__all__ = ["dataloader", "graph", "model", "optim", "tokenization", "train"]
