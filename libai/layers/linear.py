"""LiBai's `Linear1D`: a linear layer that is replicated, column-parallel or row-parallel."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import Replicate, Shard

from libai.utils import distributed as dist

from .utils import InitMethod, check_divisible, full_init, make_parameter, mesh_rank, mesh_size, to_local, tp_mesh

_PARALLEL_MODES = ("data", "col", "row")


class Linear1D(nn.Module):
    """Linear layer `y = x W^T + b` with LiBai's tensor-parallel modes.

    The weight is (out_features, in_features), as in `torch.nn.Linear`; `Conv1D` is the
    same layer with the weight stored (in_features, out_features), as GPT-2 stores it.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: whether the layer has a bias (initialised to zeros).
        parallel: "data" (weight replicated), "col" (weight split on the output dim: the
            input is replicated over tensor-parallel ranks and the output keeps this rank's
            slice of the last dim) or "row" (weight split on the input dim: the input holds
            this rank's slice of the last dim; partial results are summed over
            tensor-parallel ranks, then the bias is added).
        init_method: initialiser of the full weight (its shape is the class's layout).
        skip_bias_add: return `(output, bias)` without adding the bias, so the caller can
            fuse it with what follows (as LiBai and Megatron do).
        dtype: parameter dtype (default: torch's default dtype).
        layer_idx: index of the layer that owns it, which picks its pipeline stage.
    """

    # Whether the weight is stored (in_features, out_features) (`Conv1D`).
    weight_in_out = False

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        parallel: str = "data",
        init_method: InitMethod = nn.init.xavier_normal_,
        skip_bias_add: bool = False,
        dtype: Optional[torch.dtype] = None,
        *,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        if parallel not in _PARALLEL_MODES:
            raise ValueError(f"Linear parallel={parallel!r} is not supported: use 'data', 'col' or 'row'")
        self.in_features = in_features
        self.out_features = out_features
        self.parallel = parallel
        self.skip_bias_add = skip_bias_add
        self.layer_idx = layer_idx

        mesh = tp_mesh(layer_idx)
        self.tp_size = mesh_size(mesh)
        self.tp_rank = mesh_rank(mesh)
        if parallel == "col":
            check_divisible(out_features, self.tp_size, "column-parallel Linear out_features")
        elif parallel == "row":
            check_divisible(in_features, self.tp_size, "row-parallel Linear in_features")

        # The output dim is split by "col", the input dim by "row".
        out_dim, in_dim = (1, 0) if self.weight_in_out else (0, 1)
        weight_placement = {"data": Replicate(), "col": Shard(out_dim), "row": Shard(in_dim)}[parallel]
        shape = (in_features, out_features) if self.weight_in_out else (out_features, in_features)
        self.weight = make_parameter(full_init(shape, init_method, dtype), mesh, weight_placement)
        if bias:
            # Megatron and LiBai start biases at zero (no RNG is drawn for them).
            bias_placement = Shard(0) if parallel == "col" else Replicate()
            self.bias = make_parameter(full_init((out_features,), None, dtype), mesh, bias_placement)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Apply the layer to this rank's activations (see the class docstring for layouts)."""
        x = to_local(x)
        weight = to_local(self.weight)
        if self.weight_in_out:
            weight = weight.t()
        bias = to_local(self.bias)
        if self.parallel == "col":
            # The replicated input feeds every rank's slice: its gradient is summed over tp.
            x = dist.copy_to_tensor_parallel_region(x)
        elif self.parallel == "row":
            x = self._split_input(x)

        # A column-parallel (or replicated) bias belongs to this rank's output slice and can be
        # added before anything is summed; a row-parallel bias only after the sum.
        add_bias_now = self.parallel != "row" and not self.skip_bias_add
        output = F.linear(x, weight, bias if add_bias_now else None)
        if self.parallel == "row":
            output = dist.reduce_from_tensor_parallel_region(output)
        if self.skip_bias_add:
            return output, bias
        if self.parallel == "row" and bias is not None:
            output = output + bias
        return output

    def _split_input(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a row-parallel input, which may arrive split or whole."""
        local_in = self.in_features // self.tp_size
        if x.shape[-1] == local_in:
            return x
        if x.shape[-1] == self.in_features:
            # A replicated input (LiBai converts any layout): keep this rank's slice.
            return dist.scatter_to_tensor_parallel_region(x)
        raise ValueError(
            f"row-parallel Linear expects an input whose last dim is {local_in} (split over "
            f"{self.tp_size} ranks) or {self.in_features} (whole), got shape {tuple(x.shape)}"
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, parallel={self.parallel}"
        )


# LiBai exports the same class under both names.
Linear = Linear1D


class Conv1D(Linear1D):
    """LiBai's (and GPT-2's) `Conv1D`: `y = x W + b` with the weight stored
    (in_features, out_features), so GPT-2 checkpoints load without a transpose.

    Same arguments and tensor-parallel modes as `Linear1D`: "col" splits the output dim
    (weight dim 1), "row" the input dim (weight dim 0); `init_method` sees the
    (in_features, out_features) weight.
    """

    weight_in_out = True
