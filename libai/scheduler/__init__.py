"""Learning-rate schedulers with warmup (LiBai names and semantics) on torch.optim."""

from .lr_scheduler import (
    Warmup,
    WarmupCosineAnnealingLR,
    WarmupCosineLR,
    WarmupExponentialLR,
    WarmupMultiStepLR,
    WarmupPolynomialLR,
    WarmupStepLR,
    build_lr_scheduler,
)

__all__ = [
    "Warmup",
    "WarmupCosineLR",
    "WarmupCosineAnnealingLR",
    "WarmupStepLR",
    "WarmupMultiStepLR",
    "WarmupExponentialLR",
    "WarmupPolynomialLR",
    "build_lr_scheduler",
]
