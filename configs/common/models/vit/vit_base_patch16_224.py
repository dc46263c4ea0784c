"""ViT-Base/16 at 224 x 224 (LiBai's config); the other sizes import it and change `model.cfg`.

For MNIST: `model.cfg.update(img_size=28, patch_size=7, in_chans=1, num_classes=10)`.
"""
from libai.config import LazyCall
from libai.models import VisionTransformer

cfg = dict(
    img_size=224,
    patch_size=16,
    in_chans=3,
    embed_dim=768,
    depth=12,
    num_heads=12,
    mlp_ratio=4.0,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.1,
    num_classes=1000,
    loss_func=None,
)

model = LazyCall(VisionTransformer)(cfg=cfg)
