"""Dataset readers that work offline."""
from libai.data.datasets.mnist import MNISTDataset

__all__ = ["MNISTDataset"]
