"""A small GPT-2 with GPT-2's real tokenizer, for the inference tests (random weights or a
random Hugging Face GPT-2 of the same shapes)."""
from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.models import GPTForPreTraining
from libai.tokenizer import GPT2Tokenizer
from libai.tokenizer.offline import gpt2_vocab_files

train = get_config("common/train.py").train

vocab_file, merges_file = gpt2_vocab_files()
tokenization = OmegaConf.create()
tokenization.tokenizer = LazyCall(GPT2Tokenizer)(vocab_file=vocab_file, merges_file=merges_file)
tokenization.append_eod = True
tokenization.make_vocab_size_divisible_by = 128

model = LazyCall(GPTForPreTraining)(
    cfg=dict(
        hidden_layers=4,
        vocab_size=50304,  # 50,257 padded to a multiple of 128
        hidden_size=32,
        ffn_hidden_size=128,
        num_attention_heads=4,
        max_seq_length=64,
        activation="gelu_tanh",
    )
)
train.dist.pipeline_num_layers = 4
