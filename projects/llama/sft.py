"""Supervised fine-tuning of the Shakespeare Llama on instructions made from the plays.

    bash tools/train.sh tools/train_net.py projects/llama/pretrain.py 2     # first
    bash tools/train.sh tools/train_net.py projects/llama/sft.py 2

Starts from the pretraining run's weights (`train.load_weight`; `train.load_weight=""`
starts from scratch). The pairs (`projects/llama/instructions.py`, written to
data/shakespeare_instructions.jsonl on first use) ask for the line that follows a line of
a play; the loss is on the response tokens only, and short samples are packed into
128-token sequences whose samples do not see each other. Validation perplexity is over
the responses of the 5% held-out pairs.
"""
from omegaconf import OmegaConf

from libai.config import LazyCall
from libai.data.build import build_nlp_train_val_test_loader
from libai.data.datasets import SFTDataset
from projects.llama.instructions import shakespeare_instructions
from projects.llama.pretrain import SEQ_LENGTH, graph, model, optim, tokenization, train  # noqa: F401

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_nlp_train_val_test_loader)(
    dataset=[
        LazyCall(SFTDataset)(
            path=LazyCall(shakespeare_instructions)(path="data/shakespeare_instructions.jsonl", max_pairs=4000),
            max_seq_length=SEQ_LENGTH,
            packing=True,
            name="shakespeare instructions",
        )
    ],
    splits=[[95.0, 5.0, 0.0]],
    weights=[1.0],
    num_workers=0,
)

train.update(
    dict(
        output_dir="output/llama_sft",
        load_weight="output/llama_shakespeare/model_final",
        train_iter=200,
        checkpointer=dict(period=200),
        # One held-out split (no test split): its results are not prefixed.
        evaluation=dict(eval_period=50, eval_iter=10, eval_metric="PPL"),
    )
)
optim.lr = 3e-4
