"""LiBai's RoBERTa data config: RoBERTa's byte-level BPE tokenizer (GPT-2's files shipped
offline, with RoBERTa's special tokens; see `libai.tokenizer.offline.roberta_vocab_files`)
and `<s> text </s>` masked-LM samples from a sentence-split indexed dataset.

Create the indexed data once (from the repository root):

    python tools/make_shakespeare_corpus.py --output data/shakespeare.jsonl
    python tools/preprocess_data.py --input data/shakespeare.jsonl --json-keys text \\
        --tokenizer-name RobertaTokenizer --split-sentences --output-prefix data/shakespeare_roberta --workers 2

Point the config at other data by overriding both prefixes (LiBai lists it twice), e.g.
`dataloader.train.dataset.0.data_prefix=PREFIX dataloader.train.dataset.0.indexed_dataset.data_prefix=PREFIX`,
and the same two of the test section (`dataloader.test.0.dataset`), or drop that section
with `del dataloader.test` in a config file. The trainer passes the tokenizer to each dataset.
"""
import copy

from omegaconf import OmegaConf

from libai.config import LazyCall
from libai.data.build import build_nlp_test_loader, build_nlp_train_val_test_loader
from libai.data.datasets import RobertaDataset
from libai.data.indexed import get_indexed_dataset
from libai.tokenizer import RobertaTokenizer
from libai.tokenizer.offline import roberta_vocab_files

DATA_PREFIX = "data/shakespeare_roberta_text_sentence"
_VOCAB_FILE, _MERGES_FILE = roberta_vocab_files()

tokenization = OmegaConf.create()
tokenization.tokenizer = LazyCall(RobertaTokenizer)(vocab_file=_VOCAB_FILE, merges_file=_MERGES_FILE)
tokenization.append_eod = False
# The embedding gets padded to a multiple of this times the tensor-parallel size.
tokenization.make_vocab_size_divisible_by = 128

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_nlp_train_val_test_loader)(
    dataset=[
        LazyCall(RobertaDataset)(
            name="roberta",
            data_prefix=DATA_PREFIX,
            indexed_dataset=LazyCall(get_indexed_dataset)(data_prefix=DATA_PREFIX, data_impl="mmap", skip_warmup=False),
            # LiBai writes 514 (= max_position_embeddings), but RoBERTa's positions start
            # after the padding id, so 514 positions hold 512 tokens (roberta-base's length).
            max_seq_length=512,
            mask_lm_prob=0.15,
            short_seq_prob=0.0,
            seed=1234,
            masking_style="bert",
        ),
    ],
    train_val_test_num_samples=None,
    splits=[[949.0, 50.0, 1.0]],
    weights=[1.0],
    num_workers=4,
)

# LiBai's test section: the first 10 samples of the same data (some shorter), in batches of 4.
_test_dataset = copy.deepcopy(dataloader.train.dataset[0])
_test_dataset.max_num_samples = 10
_test_dataset.short_seq_prob = 0.1
dataloader.test = [LazyCall(build_nlp_test_loader)(dataset=_test_dataset, test_batch_size=4)]
