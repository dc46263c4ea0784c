"""LiBai's T5 model config: `cfg` holds T5Model's arguments (LiBai's defaults).

    from configs.common.models.t5 import pretrain_model as model   # or get_config(...).model
    model.cfg.hidden_layers = 12

The model spans `2 * hidden_layers` layers (encoder, then decoder). With the data config
configs/common/data/t5_dataset.py the tokenizer has 30,522 + 2 + 100 tokens ([BOS], [EOS],
sentinels): raise `vocab_size` to at least that, e.g. 30720 (a multiple of 128 x tp).
"""
from libai.config import LazyCall
from libai.models import T5ForPreTraining, T5Model

cfg = dict(
    vocab_size=30522,
    hidden_size=768,
    hidden_layers=6,
    num_attention_heads=16,
    intermediate_size=1536,
    embedding_dropout_prob=0.1,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    initializer_range=0.02,
    layernorm_eps=1e-5,
    bias_gelu_fusion=True,
    bias_dropout_fusion=True,
    scale_mask_softmax_fusion=True,
    apply_query_key_layer_scaling=True,
    apply_residual_post_layernorm=False,
    amp_enabled=False,
)

t5_model = LazyCall(T5Model)(cfg=cfg)
pretrain_model = LazyCall(T5ForPreTraining)(cfg=cfg)
# The name the trainer reads (`cfg.model`).
model = pretrain_model
