"""flowvision.loss: losses for soft targets."""
from libai.data.vision.loss.cross_entropy import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

__all__ = ["LabelSmoothingCrossEntropy", "SoftTargetCrossEntropy"]
