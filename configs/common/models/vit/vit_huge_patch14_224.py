"""ViT-Huge/14 at 224 x 224 (1280 wide, 32 layers, 16 heads).

LiBai's file of this name sets patch_size = 16; the name, and ViT-Huge/14 everywhere else
(timm, the ViT paper), say 14, which is what this one sets.
"""
from libai.config import LazyCall
from libai.models import VisionTransformer

from .vit_tiny_patch16_224 import cfg

cfg.patch_size = 14
cfg.embed_dim = 1280
cfg.depth = 32
cfg.num_heads = 16

model = LazyCall(VisionTransformer)(cfg=cfg)
