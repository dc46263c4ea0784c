"""Swin-B, patch 4, window 12, 384 x 384 (LiBai's config, plus `window_size = 12`).

LiBai's file leaves the window at 7, which cannot tile the 96 x 96 token map of a 384
image (LiBai's Swin does not pad), so that model never builds; the name and Swin-B-384's
published setting say 12.
"""
from libai.config import LazyCall
from libai.models import SwinTransformer

from .swin_tiny_patch4_window7_224 import cfg

cfg.img_size = 384
cfg.embed_dim = 128
cfg.depths = [2, 2, 18, 2]
cfg.num_heads = [4, 8, 16, 32]
cfg.window_size = 12
cfg.drop_path_rate = 0.1

model = LazyCall(SwinTransformer)(cfg=cfg)
