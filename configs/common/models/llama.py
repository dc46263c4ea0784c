"""Llama model configs: `cfg` holds the shapes of Llama-2-7B (LlamaForCausalLM's arguments),
`debug_cfg` a two-layer model with the same structure (grouped-query attention on) for tests
and quick runs.

    from configs.common.models.llama import model          # or get_config(...).model
    model.cfg.update(hidden_layers=16)
    from configs.common.models.llama import debug_model as model
"""
from libai.config import LazyCall
from libai.models import LlamaForCausalLM

cfg = dict(
    hidden_layers=32,
    vocab_size=32000,
    hidden_size=4096,
    ffn_hidden_size=11008,
    num_attention_heads=32,
    # Llama-2-7B has as many key/value heads as query heads; 70B and Llama 3 use fewer.
    num_key_value_heads=32,
    head_dim=None,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    # Hugging Face's rope_scaling: None, {"rope_type": "linear", "factor": f} or
    # {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    #  "original_max_position_embeddings"}.
    rope_scaling=None,
    attention_bias=False,
    mlp_bias=False,
    initializer_range=0.02,
    tie_word_embeddings=False,
)

debug_cfg = dict(
    cfg,
    hidden_layers=2,
    vocab_size=1024,
    hidden_size=64,
    ffn_hidden_size=176,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

model = LazyCall(LlamaForCausalLM)(cfg=cfg)
debug_model = LazyCall(LlamaForCausalLM)(cfg=debug_cfg)
