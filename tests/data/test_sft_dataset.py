"""SFTDataset: the loss lies on response tokens only, and packed samples never attend across
their boundary (a Llama gives each packed sample the losses it gives the sample alone)."""
from __future__ import annotations

import json

import pytest
import torch

from libai.data.datasets import SFTDataset
from libai.data.errors import DataError
from libai.models import LlamaForCausalLM
from libai.tokenizer import GPT2Tokenizer
from libai.tokenizer.offline import gpt2_vocab_files
from libai.utils import distributed as dist

PAIRS = [
    {"prompt": "Who wrote Hamlet?", "response": " Shakespeare."},
    {"prompt": "Continue: To be, or not", "response": " to be, that is the question"},
    {"prompt": "Say hi", "response": " hi"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return GPT2Tokenizer(*gpt2_vocab_files())


@pytest.fixture()
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return str(path)


def _field(sample, name):
    return sample.get(name).tensor


def test_loss_mask_covers_the_response_and_eos_only(tokenizer, pairs_file):
    data = SFTDataset(pairs_file, tokenizer, max_seq_length=32)
    assert len(data) == 3
    for sample, pair in zip(data, PAIRS):
        labels, mask = _field(sample, "labels"), _field(sample, "loss_mask")
        learned = labels[mask.bool()].tolist()
        assert learned == tokenizer.encode(pair["response"], add_special_tokens=False) + [tokenizer.eos_token_id]
        prompt_length = len(tokenizer.encode(pair["prompt"], add_special_tokens=False))
        assert mask[: prompt_length - 1].sum() == 0 and torch.equal(_field(sample, "input_ids")[1:prompt_length], labels[: prompt_length - 1])


def test_packing_keeps_samples_apart(tokenizer, pairs_file):
    dist.setup_dist_util({}, device="cpu")
    alone = SFTDataset(pairs_file, tokenizer, max_seq_length=32)
    packed = SFTDataset(pairs_file, tokenizer, max_seq_length=32, packing=True)
    assert len(packed) == 1  # all three fit in 32 tokens
    sample = packed[0]
    mask, positions = _field(sample, "attention_mask"), _field(sample, "position_ids")
    lengths = [int((_field(s, "labels") != tokenizer.eos_token_id).sum()) + 1 for s in alone]
    assert positions[: lengths[0]].tolist() == list(range(lengths[0])) and positions[lengths[0]] == 0
    assert not mask[lengths[0], : lengths[0]].any() and mask[lengths[0], lengths[0]]  # sample 2 cannot see sample 1

    torch.manual_seed(0)
    model = LlamaForCausalLM(dict(hidden_layers=2, vocab_size=50304, hidden_size=32, ffn_hidden_size=64,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()
    with torch.no_grad():
        packed_losses = model(_field(sample, "input_ids")[None], labels=_field(sample, "labels")[None],
                              attention_mask=mask[None], position_ids=positions[None])["lm_loss"][0]
        start = 0
        for one, length in zip(alone, lengths):
            losses = model(_field(one, "input_ids")[None], labels=_field(one, "labels")[None])["lm_loss"][0]
            torch.testing.assert_close(packed_losses[start : start + length], losses[:length], rtol=1e-5, atol=1e-6)
            start += length


def test_bad_files_are_one_line(tokenizer, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        SFTDataset(str(tmp_path / "none.jsonl"), tokenizer, 16)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl' holds no pairs"):
        SFTDataset(str(empty), tokenizer, 16)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"question": "c"}\n')
    with pytest.raises(DataError, match="bad.jsonl:2 is not a JSON object with 'prompt' and 'response'"):
        SFTDataset(str(bad), tokenizer, 16)
