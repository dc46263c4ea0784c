"""ViT-Large/16 at 224 x 224 (1024 wide, 24 layers, 16 heads)."""
from .vit_base_patch16_224 import model

model.cfg.embed_dim = 1024
model.cfg.depth = 24
model.cfg.num_heads = 16
