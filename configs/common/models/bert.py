"""LiBai's BERT model config: `cfg` holds BertModel's arguments (LiBai's defaults) plus the
heads' keys (`add_binary_head` for pre-training, `num_labels` for classification).

    from configs.common.models.bert import pretrain_model as model   # or get_config(...).model
    model.cfg.hidden_layers = 12
"""
from libai.config import LazyCall
from libai.models import BertForClassification, BertForPreTraining, BertModel

cfg = dict(
    vocab_size=30522,
    hidden_size=768,
    hidden_layers=24,
    num_attention_heads=12,
    intermediate_size=4096,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    num_tokentypes=2,
    add_pooling_layer=True,
    initializer_range=0.02,
    layernorm_eps=1e-5,
    bias_gelu_fusion=True,
    bias_dropout_fusion=True,
    scale_mask_softmax_fusion=True,
    apply_query_key_layer_scaling=True,
    # True: the original (post-LN) BERT, as Hugging Face's; False: Megatron's pre-LN BERT.
    apply_residual_post_layernorm=False,
    add_binary_head=True,
    amp_enabled=False,
    # BertForClassification only.
    num_labels=2,
    classifier_dropout=None,
)

bert_model = LazyCall(BertModel)(cfg=cfg)
pretrain_model = LazyCall(BertForPreTraining)(cfg=cfg)
classification_model = LazyCall(BertForClassification)(cfg=cfg)
# The name the trainer reads (`cfg.model`).
model = pretrain_model
