"""Continue training the Shakespeare Llama from a Hugging Face-format folder (e.g. the
export of a pretraining run, or any Llama checkpoint of the same shapes):

    python tools/export_huggingface.py --model-path output/llama_shakespeare/model_final --out output/llama_hf
    bash tools/train.sh tools/train_net.py projects/llama/from_huggingface.py 2

Everything is `pretrain.py`'s except the model, which is built from the folder's config.json
and weights by `load_huggingface_llama` (one safetensors file, shards or pytorch_model.bin).
"""
from libai.config import LazyCall
from libai.models import LlamaForCausalLM
from libai.models.utils.model_loader import load_huggingface_llama
from projects.llama.pretrain import dataloader, graph, optim, tokenization, train  # noqa: F401

model = LazyCall(load_huggingface_llama)(pretrained_model_path="output/llama_hf", model_class=LlamaForCausalLM)
train.output_dir = "output/llama_from_hf"
