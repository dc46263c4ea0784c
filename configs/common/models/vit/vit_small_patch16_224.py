"""ViT-Small/16 at 224 x 224 (384 wide, 6 heads)."""
from .vit_base_patch16_224 import model

model.cfg.embed_dim = 384
model.cfg.num_heads = 6
