"""LiBai's model zoo, built from `libai.layers` (runs under any data/tensor/pipeline layout)."""
from .build import build_graph, build_model
from .bert_model import BertForClassification, BertForPreTraining, BertModel
from .gpt_model import GPTForPreTraining, GPTModel
from .llama import LlamaForCausalLM, LlamaModel
from .resmlp import ResMLP
from .swin_transformer import SwinTransformer
from .swin_transformer_v2 import SwinTransformerV2
from .roberta_model import RobertaForCausalLM, RobertaForPreTraining, RobertaModel
from .t5_model import T5ForPreTraining, T5Model
from .vision_transformer import VisionTransformer

__all__ = [
    "BertModel",
    "BertForPreTraining",
    "BertForClassification",
    "GPTModel",
    "GPTForPreTraining",
    "LlamaModel",
    "LlamaForCausalLM",
    "ResMLP",
    "SwinTransformer",
    "SwinTransformerV2",
    "RobertaModel",
    "RobertaForPreTraining",
    "RobertaForCausalLM",
    "T5Model",
    "T5ForPreTraining",
    "VisionTransformer",
    "build_graph",
    "build_model",
]
