"""The MNIST project's model."""
from projects.mnist.modeling.model import MNISTNet

__all__ = ["MNISTNet"]
