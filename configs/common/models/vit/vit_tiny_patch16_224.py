"""ViT-Tiny/16 at 224 x 224 (192 wide, 3 heads)."""
from .vit_base_patch16_224 import model

model.cfg.embed_dim = 192
model.cfg.num_heads = 3
