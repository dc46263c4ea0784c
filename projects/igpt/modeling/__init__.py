"""The iGPT task and its two backbones."""
from .backbones import CausalConvNet, PixelTransformer
from .task import GenerativePixels

__all__ = ["CausalConvNet", "GenerativePixels", "PixelTransformer"]
