"""Data: Instance/DistTensorData, samplers, loader builders, transforms and datasets."""
from libai.data import data_utils, datasets, transforms
from libai.data.build import (
    build_image_test_loader,
    build_image_train_loader,
    build_nlp_test_loader,
    build_nlp_train_loader,
    build_nlp_train_val_test_loader,
)
from libai.data.errors import DataError
from libai.data.samplers import CyclicSampler, SingleRoundSampler
from libai.data.structures import DistTensorData, Instance

__all__ = [
    "DataError",
    "DistTensorData",
    "Instance",
    "CyclicSampler",
    "SingleRoundSampler",
    "build_image_test_loader",
    "build_image_train_loader",
    "build_nlp_test_loader",
    "build_nlp_train_loader",
    "build_nlp_train_val_test_loader",
    "data_utils",
    "datasets",
    "transforms",
]
