"""Train the tests' tiny GPT on synthetic tokens: the config the parallelism tests launch
under every layout (they override train.dist.* on the command line)."""
from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.data.build import build_nlp_test_loader, build_nlp_train_loader
from libai.evaluation import PPLEvaluator
from tests.helpers.tiny_gpt import SyntheticTokens, TinyGPT

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph

model = LazyCall(TinyGPT)(vocab_size=64, hidden_size=32, num_layers=4, num_attention_heads=4, max_seq_length=16)

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_nlp_train_loader)(dataset=[LazyCall(SyntheticTokens)(size=512)], num_workers=0)
dataloader.test = [LazyCall(build_nlp_test_loader)(dataset=LazyCall(SyntheticTokens)(size=40, seed=1), num_workers=0)]

train.update(
    dict(
        output_dir="output/tiny_gpt",
        train_micro_batch_size=4,
        global_batch_size=16,
        num_accumulation_steps=None,
        train_iter=20,
        log_period=1,
        warmup_ratio=0.1,
        test_micro_batch_size=4,
        # Off by default; the layout tests turn it on to compare perplexities.
        evaluation=dict(enabled=False, evaluator=LazyCall(PPLEvaluator)(), eval_period=10, eval_metric="PPL", eval_mode="min"),
        checkpointer=dict(period=10, max_to_keep=2),
        dist=dict(pipeline_num_layers=4),
    )
)
optim.lr = 1e-3
graph.enabled = False
