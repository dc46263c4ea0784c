"""ImageNetDataset and CIFAR10/100Dataset on files written here: samples, labels, transforms,
wrong layouts, and pickled code that must not run."""
import logging
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from libai.data import DataError
from libai.data.datasets import CIFAR10Dataset, CIFAR100Dataset, ImageNetDataset
from libai.data.structures import DistTensorData, Instance
from tests.helpers.image_data import FINE_NAMES, cifar_arrays, write_cifar100_python

# Class folders written out of order: labels must follow the sorted names.
COLORS = {"zebra": (250, 10, 10), "ant": (10, 250, 10), "bee": (10, 10, 250)}
LAYOUT = "root/train/<class>/*.JPEG"


def _write_jpeg(path, color, size=(6, 4), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path, format="JPEG", quality=100)


@pytest.fixture
def imagenet_root(tmp_path):
    """train: zebra 3 images, ant 2, bee 1 (one in a sub-folder, one grayscale); val: 1 each."""
    root = tmp_path / "imagenet"
    counts = {"zebra": 3, "ant": 2, "bee": 1}
    for name, count in counts.items():
        for i in reversed(range(count)):
            _write_jpeg(str(root / "train" / name / f"{name}_{i}.JPEG"), COLORS[name])
        _write_jpeg(str(root / "val" / name / f"v_{name}.jpg"), COLORS[name])
    _write_jpeg(str(root / "train" / "ant" / "more" / "ant_9.jpeg"), COLORS["ant"], mode="L")
    (root / "train" / "zebra" / "README.txt").write_text("not an image")
    return root


def test_imagenet_samples_labels_and_splits(imagenet_root):
    train = ImageNetDataset(str(imagenet_root), train=True)
    val = ImageNetDataset(root=str(imagenet_root), train=False)
    assert train.classes == val.classes == ["ant", "bee", "zebra"]
    assert (len(train), len(val)) == (7, 3)
    assert train.targets == [0, 0, 0, 1, 2, 2, 2]
    names = [os.path.relpath(p, imagenet_root / "train") for p, _ in train.samples]
    assert names == ["ant/ant_0.JPEG", "ant/ant_1.JPEG", "ant/more/ant_9.jpeg", "bee/bee_0.JPEG",
                     "zebra/zebra_0.JPEG", "zebra/zebra_1.JPEG", "zebra/zebra_2.JPEG"]
    assert all(p.startswith(str(imagenet_root / "val")) for p, _ in val.samples) and val.targets == [0, 1, 2]

    for index, name in [(0, "ant"), (3, "bee"), (6, "zebra")]:
        sample = train[index]
        assert isinstance(sample, Instance) and list(sample.get_fields()) == ["images", "labels"]
        assert isinstance(sample.images, DistTensorData) and sample.images.placement_idx == 0
        assert sample.labels.placement_idx == -1
        image = sample.images.tensor
        assert image.shape == (3, 4, 6) and image.dtype == torch.float32
        expected = torch.tensor(COLORS[name], dtype=torch.float32).view(3, 1, 1) / 255
        assert torch.allclose(image, expected.expand(3, 4, 6), atol=3 / 255)
        assert sample.labels.tensor.dtype == torch.long and int(sample.labels.tensor) == train.class_to_idx[name]
    # The grayscale JPEG is converted to RGB: three equal channels.
    gray = train[2].images.tensor
    assert gray.shape == (3, 4, 6) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    batch = Instance.stack([val[i] for i in range(3)])
    assert batch.images.tensor.shape == (3, 3, 4, 6) and batch.labels.tensor.tolist() == [0, 1, 2]


def test_imagenet_transform_and_target_transform(imagenet_root):
    seen = []

    def transform(image):
        seen.append((type(image), image.mode, image.size))
        return torch.full((2, 2), 7.0)

    val = ImageNetDataset(str(imagenet_root), train=False, transform=transform,
                          target_transform=lambda t: t + 10)
    sample = val[1]
    assert seen == [(Image.Image, "RGB", (6, 4))]
    assert torch.equal(sample.images.tensor, torch.full((2, 2), 7.0)) and int(sample.labels.tensor) == 11

    only_jpeg = ImageNetDataset(str(imagenet_root), is_valid_file=lambda p: p.endswith(".JPEG"),
                                loader=lambda p: Image.new("RGB", (1, 1), (255, 0, 0)))
    assert len(only_jpeg) == 6
    assert torch.equal(only_jpeg[0].images.tensor, torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1))
    with pytest.raises(TypeError, match=r"ImageNetDataset got unexpected argument\(s\) \['extensions'\]"):
        ImageNetDataset(str(imagenet_root), extensions=(".jpg",))


def test_imagenet_wrong_layouts(tmp_path, imagenet_root):
    with pytest.raises(FileNotFoundError, match=r"no folder .*nowhere/train: expected the layout "
                       r"root/train/<class>/\*\.JPEG .*nowhere does not exist"):
        ImageNetDataset(str(tmp_path / "nowhere"))
    (tmp_path / "only_val" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"only_val/train: expected .*only_val holds \[val\]"):
        ImageNetDataset(str(tmp_path / "only_val"))

    flat = tmp_path / "flat"
    for i in range(2):
        _write_jpeg(str(flat / "train" / f"img_{i}.JPEG"), (0, 0, 0))
    with pytest.raises(DataError, match=r"flat/train does not match root/train/<class>/\*\.JPEG: it holds 2 image "
                       r"files but no class folders"):
        ImageNetDataset(str(flat))
    (tmp_path / "nothing" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"nothing/train does not match .*no class folders \(0 entries\)"):
        ImageNetDataset(str(tmp_path / "nothing"))

    (imagenet_root / "val" / "empty_class").mkdir()
    (imagenet_root / "val" / "empty_class" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folder\(s\) \[empty_class\] .* hold no image files .*"
                       r"root/val/<class>/\*\.JPEG"):
        ImageNetDataset(str(imagenet_root), train=False)

    bad = imagenet_root / "train" / "ant" / "ant_0.JPEG"
    bad.write_bytes(b"this is not a jpeg")
    dataset = ImageNetDataset(str(imagenet_root))
    with pytest.raises(DataError, match=rf"cannot read image {bad} \(UnidentifiedImageError.*"
                       r"root/<train\|val>/<class>/\*\.JPEG"):
        dataset[0]


# --------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------

def _write_cifar100_binary(root, n_train=4, n_test=2):
    folder = root / "cifar-100-binary"
    folder.mkdir(parents=True)
    arrays = {}
    for split, n, seed in [("train", n_train, 2), ("test", n_test, 3)]:
        pixels, fine, coarse = cifar_arrays(n, seed)
        arrays[split] = (pixels, fine, coarse)
        records = np.concatenate([np.array([coarse, fine], dtype=np.uint8).T, pixels], axis=1)
        records.tofile(folder / f"{split}.bin")
    (folder / "fine_label_names.txt").write_text("\n".join(FINE_NAMES) + "\n")
    return arrays


def _check_cifar_samples(dataset, pixels, fine):
    assert len(dataset) == len(fine) and dataset.targets == fine
    for i in range(len(fine)):
        planes = pixels[i].reshape(3, 32, 32)  # stored channel by channel, rows first
        assert np.array_equal(dataset.data[i], planes.transpose(1, 2, 0))
        # Pixel (row 0, column 1): red, green, blue are bytes 1, 1025 and 2049 of the row.
        assert dataset.data[i][0, 1].tolist() == [pixels[i][1], pixels[i][1025], pixels[i][2049]]
        sample = dataset[i]
        assert sample.images.placement_idx == 0 and sample.labels.placement_idx == -1
        assert torch.equal(sample.images.tensor * 255, torch.from_numpy(planes).float())
        assert sample.labels.tensor.dtype == torch.long and int(sample.labels.tensor) == fine[i]


def test_cifar100_python_version(tmp_path):
    arrays = write_cifar100_python(tmp_path)
    train = CIFAR100Dataset(str(tmp_path), train=True)
    test = CIFAR100Dataset(root=str(tmp_path), train=False, dataset_name="c100")
    assert train.format == "python" and train.dataset_name == "cifar100" and test.dataset_name == "c100"
    assert train.classes == FINE_NAMES and train.class_to_idx["fine7"] == 7
    _check_cifar_samples(train, arrays["train"][0], arrays["train"][1])
    _check_cifar_samples(test, arrays["test"][0], arrays["test"][1])
    assert train.coarse_targets == arrays["train"][2]


def _py2_string(raw):
    """Python 2's str in a protocol-2 pickle: SHORT_BINSTRING or BINSTRING."""
    return b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<i", len(raw)) + raw


def _python2_pickle(pixels, fine):
    """{'data': uint8 array, 'fine_labels': [...]} byte for byte as Python 2's cPickle (protocol 2)
    writes it, as in the original CIFAR-100 files: str keys and array data are raw byte strings
    and the array is rebuilt through numpy.core.multiarray._reconstruct."""
    rows, width = pixels.shape
    dtype = b"cnumpy\ndtype\n" + _py2_string(b"u1") + b"K\x00K\x01\x87R(K\x03" + _py2_string(b"|")
    dtype += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_string(b"b") + b"\x87R"
    array += b"(K\x01M" + struct.pack("<H", rows) + b"M" + struct.pack("<H", width) + b"\x86" + dtype
    array += b"\x89" + _py2_string(pixels.tobytes()) + b"tb"
    labels = b"](" + b"".join(b"K" + bytes([label]) for label in fine) + b"e"
    return b"\x80\x02}(" + _py2_string(b"data") + array + _py2_string(b"fine_labels") + labels + b"u."


def test_cifar100_python2_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    arrays = {split: cifar_arrays(n, seed) for split, n, seed in [("train", 3, 4), ("test", 2, 5)]}
    for split, (pixels, fine, _) in arrays.items():
        (folder / split).write_bytes(_python2_pickle(pixels, fine))
    train = CIFAR100Dataset(str(tmp_path))
    assert train.classes == [str(i) for i in range(100)] and train.coarse_targets is None
    _check_cifar_samples(train, arrays["train"][0], arrays["train"][1])
    _check_cifar_samples(CIFAR100Dataset(str(tmp_path), train=False), arrays["test"][0], arrays["test"][1])


def test_cifar100_binary_version_and_transform(tmp_path):
    arrays = _write_cifar100_binary(tmp_path)
    train, test = CIFAR100Dataset(str(tmp_path)), CIFAR100Dataset(str(tmp_path), train=False)
    assert train.format == "binary" and train.classes == FINE_NAMES
    _check_cifar_samples(train, arrays["train"][0], arrays["train"][1])
    _check_cifar_samples(test, arrays["test"][0], arrays["test"][1])
    assert train.coarse_targets == arrays["train"][2]

    seen = []

    def transform(image):
        seen.append((type(image), image.mode, image.size))
        return torch.from_numpy(np.asarray(image).copy())

    sample = CIFAR100Dataset(str(tmp_path), transform=transform)[1]
    assert seen == [(Image.Image, "RGB", (32, 32))]
    assert torch.equal(sample.images.tensor, torch.from_numpy(train.data[1]))
    batch = Instance.stack([train[0], train[1]])
    assert batch.images.tensor.shape == (2, 3, 32, 32) and batch.labels.tensor.tolist() == arrays["train"][1][:2]


def test_cifar10_both_versions(tmp_path):
    py, binary = tmp_path / "py" / "cifar-10-batches-py", tmp_path / "bin" / "cifar-10-batches-bin"
    py.mkdir(parents=True)
    binary.mkdir(parents=True)
    expected_pixels, expected_labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        pixels, labels, _ = cifar_arrays(2, 10 + i, num_classes=10)
        with open(py / name, "wb") as f:
            pickle.dump({b"data": pixels, b"labels": labels}, f, protocol=2)
        np.concatenate([np.array([labels], dtype=np.uint8).T, pixels], axis=1).tofile(binary / f"{name}.bin")
        expected_pixels.append(pixels)
        expected_labels.append(labels)
    train_pixels = np.concatenate(expected_pixels[:5])
    train_labels = sum(expected_labels[:5], [])
    for root in (tmp_path / "py", tmp_path / "bin"):
        train = CIFAR10Dataset(str(root))
        assert train.classes == [str(i) for i in range(10)] and train.coarse_targets is None
        _check_cifar_samples(train, train_pixels, train_labels)
        _check_cifar_samples(CIFAR10Dataset(str(root), train=False), expected_pixels[5], expected_labels[5])


class Payload:
    """Unpickling this runs `os.system`: it would create the file `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CustomObject:
    pass


def _write_cifar100_train(root, data):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train", "wb") as f:
        pickle.dump({b"data": data, b"fine_labels": [0]}, f, protocol=2)
    return folder / "train"


def test_cifar100_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = _write_cifar100_train(tmp_path, Payload(marker))
    with pytest.raises(DataError, match=rf"refusing to unpickle (os|posix)\.system from {path}: CIFAR-100 files "
                       r"hold only arrays, lists, dicts and strings; re-download the dataset"):
        CIFAR100Dataset(str(tmp_path))
    assert not marker.exists()
    # The payload is real: an ordinary pickle.load runs it.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()

    other = tmp_path / "other"
    _write_cifar100_train(other, CustomObject())
    with pytest.raises(DataError, match=r"refusing to unpickle .*test_image_datasets\.CustomObject from "):
        CIFAR100Dataset(str(other))


def test_cifar100_codecs_only_rebuild_bytes(tmp_path):
    class Rot13:
        def __reduce__(self):
            import codecs
            return (codecs.encode, ("abc", "rot13"))

    _write_cifar100_train(tmp_path, Rot13())
    with pytest.raises(DataError, match=r"is not a readable CIFAR-100 pickle .*admitted only to rebuild bytes"):
        CIFAR100Dataset(str(tmp_path))


def test_cifar100_missing_files_and_download(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100 train files not found: Put the python version "
                       r"\(cifar-100-python.tar.gz extracted\) at .*/cifar-100-python/\{train\} or the binary "
                       r"version at .*/cifar-100-binary/\{train.bin\}; .* does not exist"):
        CIFAR100Dataset(str(tmp_path / "absent"))
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"download=True cannot fetch them: this project never downloads "
                       r"at run time\. Put .* holds \['cifar-100-python.tar.gz'\]; .* extract it with `tar -xzf"):
        CIFAR100Dataset(str(tmp_path), train=False, download=True)

    write_cifar100_python(tmp_path)
    with caplog.at_level(logging.INFO, logger="libai"):
        dataset = CIFAR100Dataset(str(tmp_path), download=True)
    assert len(dataset) == 5
    assert "CIFAR100Dataset ignores download (accepted for LiBai compatibility)" in caplog.text
    with pytest.raises(TypeError, match=r"CIFAR100Dataset got unexpected argument\(s\) \['shuffle'\]"):
        CIFAR100Dataset(str(tmp_path), shuffle=True)


def test_cifar100_damaged_files(tmp_path):
    folder = tmp_path / "binary" / "cifar-100-binary"
    folder.mkdir(parents=True)
    (folder / "train.bin").write_bytes(bytes(3074 + 10))
    with pytest.raises(DataError, match=r"train.bin has 3084 bytes, not a whole number of 3074-byte CIFAR-100 "
                       r"records: it is truncated"):
        CIFAR100Dataset(str(tmp_path / "binary"))
    record = np.zeros(3074, dtype=np.uint8)
    record[1] = 100  # fine label out of range
    record.tofile(folder / "train.bin")
    with pytest.raises(DataError, match=r"fine_labels range over \[100, 100\], outside 0..99"):
        CIFAR100Dataset(str(tmp_path / "binary"))

    path = _write_cifar100_train(tmp_path / "cut", np.zeros((1, 3072), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"is not a readable CIFAR-100 pickle \(.*\): re-download the dataset"):
        CIFAR100Dataset(str(tmp_path / "cut"))
    _write_cifar100_train(tmp_path / "shape", np.zeros((1, 100), dtype=np.uint8))
    with pytest.raises(DataError, match=r"'data' must be a uint8 array N x 3072, got ndarray \(1, 100\)"):
        CIFAR100Dataset(str(tmp_path / "shape"))
