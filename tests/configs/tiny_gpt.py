"""Train the tests' tiny GPT on synthetic tokens: the config the parallelism tests launch
under every layout (they override train.dist.* on the command line)."""
from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.data.build import build_nlp_train_loader
from tests.helpers.tiny_gpt import SyntheticTokens, TinyGPT

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph

model = LazyCall(TinyGPT)(vocab_size=64, hidden_size=32, num_layers=4, num_attention_heads=4, max_seq_length=16)

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_nlp_train_loader)(dataset=[LazyCall(SyntheticTokens)(size=512)], num_workers=0)

train.update(
    dict(
        output_dir="output/tiny_gpt",
        train_micro_batch_size=4,
        global_batch_size=16,
        num_accumulation_steps=None,
        train_iter=20,
        log_period=1,
        warmup_ratio=0.1,
        evaluation=dict(enabled=False),
        checkpointer=dict(period=10, max_to_keep=2),
        dist=dict(pipeline_num_layers=4),
    )
)
optim.lr = 1e-3
graph.enabled = False
