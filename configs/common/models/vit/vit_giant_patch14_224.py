"""ViT-Giant/14 at 224 x 224 (1408 wide, 40 layers, 16 heads, MLP 6144 wide)."""
from libai.config import LazyCall
from libai.models import VisionTransformer

from .vit_tiny_patch16_224 import cfg

cfg.patch_size = 14
cfg.embed_dim = 1408
cfg.mlp_ratio = 48 / 11
cfg.depth = 40
cfg.num_heads = 16

model = LazyCall(VisionTransformer)(cfg=cfg)
