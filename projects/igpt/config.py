"""Generative pixel pretraining (iGPT) on MNIST digits, with a digit classifier on top.

    bash tools/train.sh tools/train_net.py projects/igpt/config.py 2
    # the attention-free backbone instead, the task unchanged:
    bash tools/train.sh tools/train_net.py projects/igpt/config.py 2 \
        model.backbone._target_=projects.igpt.modeling.CausalConvNet

Digits are shrunk to 14 x 14 and their pixels quantised to 16 intensity clusters (fitted
once on the training digits, saved in data/igpt/); a digit is a sequence of 196 pixel tokens.
The backbone learns to predict the next pixel; `classify=True` adds iGPT's classification
head on the mean of the hidden states, trained jointly. Evaluation reports Acc@1/Acc@5 and
the pixel perplexity (PPL). For Fashion-MNIST give both datasets a `root` with its IDX files.
"""
from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.data.build import build_image_test_loader, build_image_train_loader
from libai.evaluation import ClsEvaluator, DatasetEvaluators, PPLEvaluator
from projects.igpt.data import PixelSequences
from projects.igpt.modeling import GenerativePixels, PixelTransformer

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph

image_size = 14
num_clusters = 16
hidden_size = 64

# Both backbones take these four arguments (and have defaults for the rest), so a
# `model.backbone._target_=...` override is all a swap needs.
model = LazyCall(GenerativePixels)(
    backbone=LazyCall(PixelTransformer)(
        vocab_size=num_clusters + 1,  # the pixel clusters and the start token
        max_positions=image_size * image_size,
        hidden_size=hidden_size,
        num_layers=4,
    ),
    hidden_size=hidden_size,
    num_clusters=num_clusters,
    classify=True,
    num_classes=10,
    cls_loss_weight=1.0,
)

pixels = dict(root=None, image_size=image_size, num_clusters=num_clusters, clusters_file=None)
dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_image_train_loader)(
    dataset=[LazyCall(PixelSequences)(train=True, **pixels)],
    num_workers=0,
)
dataloader.test = [
    LazyCall(build_image_test_loader)(
        dataset=LazyCall(PixelSequences)(train=False, dataset_name="mnist pixels test", **pixels),
        num_workers=0,
    )
]

train.update(
    dict(
        output_dir="output/igpt",
        train_micro_batch_size=32,
        test_micro_batch_size=100,
        train_epoch=30,
        train_iter=0,
        warmup_ratio=0.05,
        log_period=20,
        checkpointer=dict(period=500, max_to_keep=2),
        dist=dict(pipeline_num_layers=4),
        evaluation=dict(
            enabled=True,
            evaluator=LazyCall(DatasetEvaluators)(evaluators=[LazyCall(ClsEvaluator)(topk=(1, 5)), LazyCall(PPLEvaluator)()]),
            eval_period=500,
            eval_metric="Acc@1",
            eval_mode="max",
        ),
    )
)
optim.lr = 2e-3
optim.weight_decay = 0.01
graph.enabled = False
