"""TokenPositionEmbedding: GPT-2's and T5's input embedding, one class under two LiBai names."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from libai.layers import TokenPositionEmbedding, VocabEmbedding
from libai.layers.utils import to_local
from libai.utils import distributed as dist

V, H, P = 16, 8, 6


@pytest.fixture(autouse=True)
def one_process_layout() -> None:
    dist.setup_dist_util({}, device="cpu")
    torch.manual_seed(0)


def full(weight: torch.Tensor) -> torch.Tensor:
    return weight.full_tensor() if hasattr(weight, "full_tensor") else weight


@pytest.mark.parametrize("table", ["token_embeddings", "word_embeddings"])
def test_token_table_name_is_the_checkpoint_key(table: str) -> None:
    emb = TokenPositionEmbedding(V, H, P, token_table=table)
    assert list(emb.state_dict()) == [f"{table}.weight", "position_embeddings.weight"]
    assert isinstance(emb.tokens, VocabEmbedding) and emb.tokens is getattr(emb, table)


def test_sum_of_tables_at_positions() -> None:
    emb = TokenPositionEmbedding(V, H, P, dropout_prob=0.5).eval()
    ids = torch.tensor([[3, 1, 4], [1, 5, 9]])
    tokens, positions = full(emb.tokens.weight), full(emb.position_embeddings.weight)
    expected = F.embedding(ids, tokens) + positions[2:5]
    assert torch.equal(to_local(emb(ids, past_length=2)), expected)
    given = torch.tensor([[0, 0, 1], [5, 4, 3]])
    assert torch.equal(to_local(emb(ids, position_ids=given)), F.embedding(ids, tokens) + F.embedding(given, positions))


def test_too_long_input_names_the_config_key() -> None:
    emb = TokenPositionEmbedding(V, H, P, max_positions_key="max_seq_length")
    with pytest.raises(ValueError, match=f"reaches position {P + 1} but max_seq_length is {P}"):
        emb(torch.zeros(1, 2, dtype=torch.long), past_length=P - 1)


def test_token_table_may_not_shadow_other_submodules() -> None:
    with pytest.raises(ValueError, match="another submodule"):
        TokenPositionEmbedding(V, H, P, token_table="dropout")
