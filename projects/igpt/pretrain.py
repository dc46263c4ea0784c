"""Generative pretraining only (iGPT without the classifier): next-pixel prediction,
evaluated by the pixel perplexity.

    bash tools/train.sh tools/train_net.py projects/igpt/pretrain.py 2
"""
from libai.config import LazyCall
from libai.evaluation import PPLEvaluator
from projects.igpt.config import dataloader, graph, model, optim, train  # noqa: F401

model.classify = False
train.output_dir = "output/igpt_pretrain"
train.evaluation.update(dict(evaluator=LazyCall(PPLEvaluator)(), eval_metric="PPL", eval_mode="min"))
