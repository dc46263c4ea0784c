"""T5 span corruption on the Shakespeare sentences (BERT vocabulary + sentinels), shrunk for
the layout tests: 2 encoder + 2 decoder layers of width 64, no dropout."""
from libai.config import LazyCall, get_config
from projects.shakespeare.data import shakespeare_data_prefix, shakespeare_indexed_dataset

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph
data = get_config("common/data/t5_dataset.py")
tokenization, dataloader = data.tokenization, data.dataloader
model = get_config("common/models/t5.py").model

PREFIX = "data/shakespeare_bert"
dataset = dataloader.train.dataset[0]
dataset.data_prefix = shakespeare_data_prefix(PREFIX, split_sentences=True)
dataset.indexed_dataset = LazyCall(shakespeare_indexed_dataset)(
    prefix=PREFIX, tokenizer_name="BertTokenizer", split_sentences=True, append_eod=False
)
dataset.update(max_seq_length=32, max_seq_length_dec=16)
dataloader.train.num_workers = 0
del dataloader.test  # evaluation is off in the layout tests

# 30,522 WordPiece tokens + [BOS], [EOS] and 100 sentinels, padded to 128 x 2.
model.cfg.update(vocab_size=30720, hidden_size=64, hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=32, embedding_dropout_prob=0.0, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)
train.update(dict(train_micro_batch_size=2, global_batch_size=16, train_iter=10, log_period=1,
                  evaluation=dict(enabled=False), checkpointer=dict(period=100), dist=dict(pipeline_num_layers=4)))
graph.enabled = False
