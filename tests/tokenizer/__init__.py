"""Tests of libai.tokenizer."""
