"""A small LeNet-style CNN for 28x28 digits, following LiBai's model contract."""
import torch
from torch import nn


class MNISTNet(nn.Module):
    """Two 5x5 conv blocks and two linear layers (~0.2M parameters).

    `forward(images, labels=None)` returns `{"losses": ...}` in training and
    `{"prediction_scores": logits}` in evaluation, as LiBai's trainer and `ClsEvaluator`
    expect. No dropout, so the loss curve does not depend on the parallel layout.
    """

    def __init__(self, num_classes: int = 10, channels: tuple = (16, 32), hidden: int = 128):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        # A member, so that the stage that holds the head can compute the loss.
        self.loss_func = nn.CrossEntropyLoss()

    def forward(self, images: torch.Tensor, labels: torch.Tensor = None) -> dict:
        logits = self.classifier(self.features(images))
        if self.training and labels is not None:
            return {"losses": self.loss_func(logits, labels)}
        return {"prediction_scores": logits}
