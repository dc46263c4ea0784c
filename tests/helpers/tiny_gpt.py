"""A tiny GPT built only from `libai.layers`, and a synthetic token dataset, for the
parallelism tests: small enough to train 20 steps on 8 CPU processes in seconds."""
import torch
from torch import nn

from libai.data.structures import DistTensorData, Instance
from libai.layers import (
    AttnMaskType,
    Embedding,
    LayerNorm,
    LMLogits,
    ParallelCrossEntropyLoss,
    TransformerLayer,
    VocabEmbedding,
)


class TinyGPT(nn.Module):
    """Token + position embeddings, `num_layers` causal pre-LN transformer layers, a final
    LayerNorm and an LM head tied to the word embeddings; `forward` returns `lm_loss`."""

    def __init__(
        self,
        vocab_size: int = 64,
        hidden_size: int = 32,
        num_layers: int = 4,
        num_attention_heads: int = 4,
        max_seq_length: int = 16,
        dropout: float = 0.0,
    ):
        super().__init__()
        init = nn.init.normal_
        self.word_embeddings = VocabEmbedding(vocab_size, hidden_size, init_method=init, layer_idx=0)
        self.position_embeddings = Embedding(max_seq_length, hidden_size, init_method=init, layer_idx=0)
        self.layers = nn.ModuleList(
            [
                TransformerLayer(
                    hidden_size,
                    4 * hidden_size,
                    num_attention_heads,
                    attention_dropout_prob=dropout,
                    output_dropout_prob=dropout,
                    attn_mask_type=AttnMaskType.causal,
                    layer_idx=i,
                )
                for i in range(num_layers)
            ]
        )
        self.final_layernorm = LayerNorm(hidden_size, layer_idx=-1)
        self.lm_head = LMLogits(vocab_size, bias=False)
        self.loss_func = ParallelCrossEntropyLoss()

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor = None) -> dict:
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        hidden = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        for layer in self.layers:
            hidden = layer(hidden)
        logits = self.lm_head(self.final_layernorm(hidden), self.word_embeddings.weight)
        if labels is None:
            return {"logits": logits}
        token_losses = self.loss_func(logits, labels)
        # Training sums the mean; evaluation (PPLEvaluator) reads the per-token losses.
        return {"lm_loss": token_losses.mean() if self.training else token_losses}


class TinyGPTTurningNaN(TinyGPT):
    """A `TinyGPT` whose training loss becomes NaN from its `nan_from_call`-th training
    forward on (0-based): a run that diverges at a known iteration."""

    def __init__(self, nan_from_call: int, **kwargs):
        super().__init__(**kwargs)
        self.nan_from_call = nan_from_call
        self.calls = 0

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor = None) -> dict:
        out = super().forward(input_ids, labels)
        if self.training:
            if self.calls >= self.nan_from_call:
                out["lm_loss"] = out["lm_loss"] * float("nan")
            self.calls += 1
        return out


class TinyGPTWithDetachedLayer(TinyGPT):
    """A `TinyGPT` whose first layer's output is detached: the position embeddings and
    layer 0 receive no gradient (the word embeddings still do, through the tied head)."""

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor = None) -> dict:
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        hidden = self.layers[0](self.word_embeddings(input_ids).detach() + self.position_embeddings(positions))
        hidden = hidden.detach()
        for layer in self.layers[1:]:
            hidden = layer(hidden)
        logits = self.lm_head(self.final_layernorm(hidden), self.word_embeddings.weight)
        token_losses = self.loss_func(logits, labels)
        return {"lm_loss": token_losses.mean() if self.training else token_losses}


class SyntheticTokens(torch.utils.data.Dataset):
    """`size` sequences of a noisy counting language: token t+1 = token t + step (mod vocab).
    `labels_placement_idx` is the pipeline stage the labels go to (the last, as LiBai's)."""

    def __init__(self, size: int = 512, seq_length: int = 16, vocab_size: int = 64, seed: int = 0,
                 labels_placement_idx=-1):
        self.labels_placement_idx = labels_placement_idx
        gen = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, vocab_size, (size, 1), generator=gen)
        steps = torch.randint(1, 4, (size, 1), generator=gen)
        self.tokens = (starts + steps * torch.arange(seq_length + 1)) % vocab_size

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, idx: int) -> Instance:
        seq = self.tokens[idx]
        return Instance(
            input_ids=DistTensorData(seq[:-1], placement_idx=0),
            labels=DistTensorData(seq[1:], placement_idx=self.labels_placement_idx),
        )
