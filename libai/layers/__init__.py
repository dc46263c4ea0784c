"""LiBai's layers, with tensor parallelism over the stage's "tp" mesh.

A model written with these layers runs under any `train.dist` layout: each layer takes
`layer_idx` (its pipeline stage), keeps its parameters as DTensors split or replicated over
tensor-parallel ranks, and computes on this rank's local activations.
"""
from .activation import Activation, build_activation
from .attention import AttnMaskType, GroupedQueryAttention, MultiheadAttention
from .cross_entropy import ParallelCrossEntropyLoss
from .embedding import Embedding, PatchEmbedding, SinePositionalEmbedding, TokenPositionEmbedding, VocabEmbedding
from .kv_cache import KVCache
from .layer_norm import LayerNorm, RMSLayerNorm
from .linear import Conv1D, Linear, Linear1D
from .lm_logits import LMLogits
from .mlp import MLP, SwiGLU
from .rotary import RotaryEmbedding
from .droppath import DropPath, drop_path
from .transformer_layer import TransformerLayer, enable_activation_checkpointing

__all__ = [
    "Activation",
    "AttnMaskType",
    "Conv1D",
    "DropPath",
    "Embedding",
    "GroupedQueryAttention",
    "KVCache",
    "LMLogits",
    "LayerNorm",
    "Linear",
    "Linear1D",
    "MLP",
    "MultiheadAttention",
    "ParallelCrossEntropyLoss",
    "PatchEmbedding",
    "RMSLayerNorm",
    "RotaryEmbedding",
    "SinePositionalEmbedding",
    "SwiGLU",
    "TokenPositionEmbedding",
    "TransformerLayer",
    "VocabEmbedding",
    "build_activation",
    "drop_path",
    "enable_activation_checkpointing",
]
