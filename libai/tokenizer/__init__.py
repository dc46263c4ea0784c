"""Tokenizers with LiBai's names, on Hugging Face `tokenizers` backends; vocabularies ship offline.

    from libai.tokenizer import GPT2Tokenizer, gpt2_vocab_files
    tokenizer = GPT2Tokenizer(*gpt2_vocab_files())
    tokenizer.encode("Hello world")          # [15496, 995]
"""
from libai.tokenizer.build import build_tokenizer, vocab_size_with_padding
from libai.tokenizer.offline import bert_vocab_file, gpt2_vocab_files, roberta_vocab_files, shakespeare_texts
from libai.tokenizer.tokenization_base import PreTrainedTokenizer
from libai.tokenizer.tokenization_bert import BertTokenizer
from libai.tokenizer.tokenization_gpt2 import GPT2Tokenizer
from libai.tokenizer.tokenization_roberta import RobertaTokenizer

__all__ = [
    "PreTrainedTokenizer",
    "BertTokenizer",
    "GPT2Tokenizer",
    "RobertaTokenizer",
    "build_tokenizer",
    "vocab_size_with_padding",
    "gpt2_vocab_files",
    "roberta_vocab_files",
    "bert_vocab_file",
    "shakespeare_texts",
]
