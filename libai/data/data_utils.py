"""LiBai's import path for the Megatron indexed data: configs written for LiBai say
`from libai.data.data_utils import get_indexed_dataset`. The code is in `libai.data.indexed`."""
from libai.data.indexed import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    best_fitting_dtype,
    get_indexed_dataset,
    make_builder,
)

__all__ = ["MMapIndexedDataset", "MMapIndexedDatasetBuilder", "best_fitting_dtype", "get_indexed_dataset", "make_builder"]
