"""ResMLP-12 at 224 x 224 (LiBai's config: 384 wide, 12 blocks, patches of 16); the other
ResMLP sizes import its `cfg` and change it.

For MNIST: `model.cfg.update(img_size=28, patch_size=7, in_chans=1, num_classes=10)`.
"""
from libai.config import LazyCall
from libai.models import ResMLP

cfg = dict(
    img_size=224,
    patch_size=16,
    in_chans=3,
    embed_dim=384,
    depth=12,
    drop_rate=0.0,
    drop_path_rate=0.05,
    init_scale=0.1,
    num_classes=1000,
    loss_func=None,
)

model = LazyCall(ResMLP)(cfg=cfg)
