"""LiBai's RoBERTa model config: `cfg` holds RobertaModel's arguments (LiBai's defaults:
roberta-base's sizes, 514 positions, one token type, `<pad>` = 1).

    from configs.common.models.roberta import pretrain_model as model   # or get_config(...).model
    model.cfg.hidden_layers = 6
"""
from libai.config import LazyCall
from libai.models import RobertaForCausalLM, RobertaForPreTraining, RobertaModel

cfg = dict(
    vocab_size=50265,
    hidden_size=768,
    hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=514,
    num_tokentypes=1,
    add_pooling_layer=True,
    initializer_range=0.02,
    layernorm_eps=1e-5,
    pad_token_id=1,
    bias_gelu_fusion=True,
    bias_dropout_fusion=True,
    scale_mask_softmax_fusion=True,
    apply_query_key_layer_scaling=True,
    # True: the original (post-LN) RoBERTa, as Hugging Face's; False: Megatron's pre-LN order.
    apply_residual_post_layernorm=False,
    amp_enabled=False,
)

roberta_model = LazyCall(RobertaModel)(cfg=cfg)
roberta_causal_lm = LazyCall(RobertaForCausalLM)(cfg=cfg)
pretrain_model = LazyCall(RobertaForPreTraining)(cfg=cfg)
# The name the trainer reads (`cfg.model`).
model = pretrain_model
