"""ViT-Large/16 at 224 x 224 (1024 wide, 24 layers, 16 heads)."""
from libai.config import LazyCall
from libai.models import VisionTransformer

from .vit_tiny_patch16_224 import cfg

cfg.patch_size = 16
cfg.embed_dim = 1024
cfg.depth = 24
cfg.num_heads = 16

model = LazyCall(VisionTransformer)(cfg=cfg)
