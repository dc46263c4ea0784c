"""Classify a digit with a trained MNIST model, in one line.

    from projects.mnist.pipeline import predict
    predict("digit.png")                 # {"label": 7, "score": 0.99}
    predict(array_28x28, model_path="output/mnist/model_best")

The image (a file path, a PIL image, a 28x28 uint8 array, or a list of them) gets the
config's test transform. The pipeline of each (model_path, config) is built once.
"""
from __future__ import annotations

import functools
import os
from typing import Any

from libai.inference import ImageClassificationPipeline

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")
DEFAULT_MODEL = "output/mnist/model_final"


@functools.lru_cache(maxsize=4)
def load_pipeline(model_path: str = DEFAULT_MODEL, config_file: str = CONFIG) -> ImageClassificationPipeline:
    """The digit classifier of checkpoint `model_path` (digits are read as grayscale)."""
    return ImageClassificationPipeline(config_file, model_path=model_path, image_mode="L")


def predict(image: Any, model_path: str = DEFAULT_MODEL, config_file: str = CONFIG, **kwargs: Any):
    """`{"label": digit, "score": probability}` for an image (a list for a list of images);
    `return_all_scores=True` adds every digit's probability."""
    return load_pipeline(model_path, config_file)(image, **kwargs)
