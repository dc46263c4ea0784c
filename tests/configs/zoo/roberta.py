"""configs/roberta_pretrain.py on the Shakespeare sentences (RoBERTa's BPE), shrunk for the
layout tests: 4 layers of width 64, no dropout."""
from libai.config import LazyCall, LazyConfig
from projects.shakespeare.data import shakespeare_data_prefix, shakespeare_indexed_dataset

_cfg = LazyConfig.load("configs/roberta_pretrain.py")
model, train, optim, graph, tokenization, dataloader = (
    _cfg.model, _cfg.train, _cfg.optim, _cfg.graph, _cfg.tokenization, _cfg.dataloader
)

PREFIX = "data/shakespeare_roberta"
dataset = dataloader.train.dataset[0]
dataset.data_prefix = shakespeare_data_prefix(PREFIX, split_sentences=True)
dataset.indexed_dataset = LazyCall(shakespeare_indexed_dataset)(
    prefix=PREFIX, tokenizer_name="RobertaTokenizer", split_sentences=True, append_eod=False
)
dataset.max_seq_length = 32
dataloader.train.num_workers = 0
del dataloader.test  # evaluation is off in the layout tests

# RoBERTa's 50,262 tokens padded to 128 x 2; 34 positions hold 32 tokens (after <pad> = 1).
model.cfg.update(vocab_size=50304, hidden_size=64, hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=34, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
train.update(dict(train_micro_batch_size=2, global_batch_size=16, train_iter=10, log_period=1, amp=dict(enabled=False),
                  evaluation=dict(enabled=False), checkpointer=dict(period=100),
                  # LiBai's config fixes 8 data-parallel ranks: inferred here from the world size.
                  dist=dict(data_parallel_size=None, pipeline_num_layers=4)))
graph.enabled = False
optim.lr = 1e-3
