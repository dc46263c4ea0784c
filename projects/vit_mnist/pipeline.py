"""Classify a digit with the trained Vision Transformer of this project, in one line.

    from projects.vit_mnist.pipeline import predict
    predict("digit.png")                 # {"label": 7, "score": 0.98}

Same inputs and outputs as `projects.mnist.pipeline.predict`, with this project's config.
"""
from __future__ import annotations

import os
from typing import Any

from projects.mnist import pipeline as mnist_pipeline

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")
DEFAULT_MODEL = "output/vit_mnist/model_final"


def predict(image: Any, model_path: str = DEFAULT_MODEL, config_file: str = CONFIG, **kwargs: Any):
    """`{"label": digit, "score": probability}` for an image (a list for a list of images)."""
    return mnist_pipeline.predict(image, model_path, config_file, **kwargs)
