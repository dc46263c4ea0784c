"""ResMLP-24 at 224 x 224 (384 wide, 24 blocks, LayerScale starting at 1e-5)."""
from libai.config import LazyCall
from libai.models import ResMLP

from .resmlp_12 import cfg

cfg.depth = 24
cfg.init_scale = 1e-5

model = LazyCall(ResMLP)(cfg=cfg)
