"""The transformer feed-forward blocks: `MLP` (column-parallel up projection, GELU,
row-parallel down) and Llama's gated `SwiGLU`."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from libai.utils.logger import log_ignored_arguments

from .linear import Linear
from .utils import InitMethod, to_local

# LiBai's activation names -> torch's `approximate` argument of GELU.
_GELU_APPROXIMATION = {"gelu": "none", "gelu_tanh": "tanh"}


class MLP(nn.Module):
    """`dropout(dense_4h_to_h(gelu(dense_h_to_4h(x))))`, split over tensor-parallel ranks.

    `dense_h_to_4h` is column-parallel (each rank computes its slice of the hidden units),
    `dense_4h_to_h` row-parallel (partial outputs summed over ranks), so the block needs one
    all-reduce forward and one backward. The output is replicated over tensor-parallel ranks.

    Args:
        hidden_size: size of the input and output.
        ffn_hidden_size: size of the intermediate layer (must divide by the tp size).
        output_dropout_prob: dropout on the output.
        init_method: initialiser of `dense_h_to_4h`'s weight.
        output_layer_init_method: initialiser of `dense_4h_to_h`'s weight (default: init_method).
        bias_gelu_fusion: LiBai's fused bias + GELU; accepted, the bias is added in the matmul.
        bias_dropout_fusion: LiBai's fused bias + dropout; the same arithmetic here.
        activation: "gelu" (exact, erf) or "gelu_tanh" (the tanh approximation that GPT-2
            was trained with, Hugging Face's "gelu_new").
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        hidden_size: int,
        ffn_hidden_size: int,
        output_dropout_prob: float = 0.0,
        init_method: InitMethod = nn.init.xavier_normal_,
        output_layer_init_method: Optional[InitMethod] = None,
        bias_gelu_fusion: bool = False,
        bias_dropout_fusion: bool = False,
        activation: str = "gelu",
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        if activation not in _GELU_APPROXIMATION:
            raise ValueError(f"MLP activation={activation!r} is not supported: use 'gelu' or 'gelu_tanh'")
        fusions = dict(bias_gelu_fusion=bias_gelu_fusion, bias_dropout_fusion=bias_dropout_fusion)
        log_ignored_arguments(
            "MLP", "fused kernels compute the same numbers; the bias is added in the matmul",
            **{name: value for name, value in fusions.items() if value},
        )
        self.activation = activation
        self.output_dropout_prob = output_dropout_prob
        self.bias_gelu_fusion = bias_gelu_fusion
        self.bias_dropout_fusion = bias_dropout_fusion
        if output_layer_init_method is None:
            output_layer_init_method = init_method
        self.dense_h_to_4h = Linear(
            hidden_size,
            ffn_hidden_size,
            bias=True,
            parallel="col",
            init_method=init_method,
            # No fused bias+GELU kernel here: adding the bias inside the matmul (addmm) is
            # the faster way to compute the same thing, whatever `bias_gelu_fusion` says.
            layer_idx=layer_idx,
        )
        self.activation_func = nn.GELU(approximate=_GELU_APPROXIMATION[activation])
        self.dense_4h_to_h = Linear(
            ffn_hidden_size,
            hidden_size,
            bias=True,
            parallel="row",
            init_method=output_layer_init_method,
            skip_bias_add=bias_dropout_fusion,
            layer_idx=layer_idx,
        )
        self.dropout = nn.Dropout(output_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Apply the block to replicated `hidden_states` of shape [..., hidden_size]."""
        intermediate = self.activation_func(self.dense_h_to_4h(to_local(hidden_states)))
        output = self.dense_4h_to_h(intermediate)
        if self.bias_dropout_fusion:
            output, bias = output
            output = output + bias
        return self.dropout(output)


class SwiGLU(nn.Module):
    """Llama's gated MLP: `down_proj(silu(gate_proj(x)) * up_proj(x))`, tensor-parallel.

    `gate_proj` and `up_proj` are column-parallel (each rank holds the same slice of the
    intermediate units of both, so the product needs no communication), `down_proj`
    row-parallel; one all-reduce forward and one backward, like `MLP`.

    Args:
        hidden_size: size of the input and output.
        ffn_hidden_size: intermediate size (must divide by the tp size).
        bias: biases on the three projections (Hugging Face's `mlp_bias`).
        init_method: initialiser of gate_proj's and up_proj's weights.
        output_layer_init_method: initialiser of down_proj's weight (default: init_method).
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    def __init__(
        self,
        hidden_size: int,
        ffn_hidden_size: int,
        bias: bool = False,
        init_method: InitMethod = nn.init.xavier_normal_,
        output_layer_init_method: Optional[InitMethod] = None,
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx

        def col() -> Linear:
            return Linear(hidden_size, ffn_hidden_size, bias=bias, parallel="col", init_method=init_method, layer_idx=layer_idx)

        self.gate_proj = col()
        self.up_proj = col()
        self.down_proj = Linear(
            ffn_hidden_size,
            hidden_size,
            bias=bias,
            parallel="row",
            init_method=output_layer_init_method or init_method,
            layer_idx=layer_idx,
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Apply the block to replicated `hidden_states` [..., hidden_size]."""
        hidden_states = to_local(hidden_states)
        return self.down_proj(F.silu(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))
