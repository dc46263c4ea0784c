"""LiBai's T5 data config: bert-base-uncased's WordPiece tokenizer (shipped offline) plus 100
sentinels `<extra_id_0>`... and [BOS]/[EOS], and span-corruption samples from an indexed dataset.

Create the indexed data once (from the repository root), with the same tokenizer as BERT:

    python tools/make_shakespeare_corpus.py --output data/shakespeare.jsonl
    python tools/preprocess_data.py --input data/shakespeare.jsonl --json-keys text \\
        --tokenizer-name BertTokenizer --split-sentences --output-prefix data/shakespeare_bert --workers 2

Point the config at other data by overriding both prefixes (LiBai lists it twice), e.g.
`dataloader.train.dataset.0.data_prefix=PREFIX dataloader.train.dataset.0.indexed_dataset.data_prefix=PREFIX`.
The test section (`dataloader.test.0.dataset`) has the same two prefixes: override them too,
or drop the section with `del dataloader.test` in a config file.
The trainer passes the tokenizer to each dataset.
"""
import copy

from omegaconf import OmegaConf

from libai.config import LazyCall
from libai.data.build import build_nlp_test_loader, build_nlp_train_val_test_loader
from libai.data.datasets import T5Dataset
from libai.data.indexed import get_indexed_dataset
from libai.tokenizer import BertTokenizer
from libai.tokenizer.offline import bert_vocab_file

DATA_PREFIX = "data/shakespeare_bert_text_sentence"
NUM_SENTINELS = 100
# T5's sentinel tokens (LiBai's name for the list).
special_tokens = [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]

tokenization = OmegaConf.create()
tokenization.tokenizer = LazyCall(BertTokenizer)(
    vocab_file=bert_vocab_file(),
    do_lower_case=True,
    # New tokens, appended after the 30,522 of the vocabulary: [BOS], [EOS], then the sentinels.
    bos_token="[BOS]",
    eos_token="[EOS]",
    additional_special_tokens=special_tokens,
)
tokenization.append_eod = False
# The embedding gets padded to a multiple of this times the tensor-parallel size.
tokenization.make_vocab_size_divisible_by = 128

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_nlp_train_val_test_loader)(
    dataset=[
        LazyCall(T5Dataset)(
            name="t5",
            data_prefix=DATA_PREFIX,
            indexed_dataset=LazyCall(get_indexed_dataset)(data_prefix=DATA_PREFIX, data_impl="mmap", skip_warmup=False),
            max_seq_length=512,
            max_seq_length_dec=128,
            masked_lm_prob=0.15,
            mean_span_length=3,
            seed=1234,
        ),
    ],
    train_val_test_num_samples=None,
    splits=[[949.0, 50.0, 1.0]],
    weights=[1.0],
    num_workers=4,
)

# LiBai's test section: the first 10 samples of the same data, in batches of 4. A config
# that points the train dataset elsewhere points this one there too (LiBai's configs set
# `dataloader.test[0].dataset.data_prefix` and its `indexed_dataset.data_prefix`).
_test_dataset = copy.deepcopy(dataloader.train.dataset[0])
_test_dataset.max_num_samples = 10
dataloader.test = [LazyCall(build_nlp_test_loader)(dataset=_test_dataset, test_batch_size=4)]
