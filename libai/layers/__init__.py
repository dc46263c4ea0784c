"""LiBai's layers, with tensor parallelism over the stage's "tp" mesh.

A model written with these layers runs under any `train.dist` layout: each layer takes
`layer_idx` (its pipeline stage), keeps its parameters as DTensors split or replicated over
tensor-parallel ranks, and computes on this rank's local activations.
"""
from .attention import AttnMaskType, GroupedQueryAttention, MultiheadAttention
from .cross_entropy import ParallelCrossEntropyLoss
from .embedding import Embedding, TokenPositionEmbedding, VocabEmbedding
from .kv_cache import KVCache
from .layer_norm import LayerNorm, RMSLayerNorm
from .linear import Linear, Linear1D
from .lm_logits import LMLogits
from .mlp import MLP, SwiGLU
from .rotary import RotaryEmbedding
from .transformer_layer import DropPath, TransformerLayer, enable_activation_checkpointing

__all__ = [
    "AttnMaskType",
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
    "RMSLayerNorm",
    "RotaryEmbedding",
    "SwiGLU",
    "TokenPositionEmbedding",
    "TransformerLayer",
    "VocabEmbedding",
    "enable_activation_checkpointing",
]
