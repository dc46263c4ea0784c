"""The Llama Shakespeare project, shrunk for the layout tests: 4 layers of width 64, GQA 4/2 heads, 20 steps."""
from projects.llama.pretrain import dataloader, graph, model, optim, tokenization, train  # noqa: F401

model.cfg.update(hidden_size=64, ffn_hidden_size=176, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
dataloader.train.dataset[0].max_seq_length = 32
train.update(dict(train_micro_batch_size=2, global_batch_size=16, train_iter=20, log_period=1,
                  evaluation=dict(enabled=False), checkpointer=dict(period=100)))
