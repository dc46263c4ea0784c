"""CIFAR-10 and CIFAR-100 read from local files; nothing is downloaded, no pickled code runs.

Either version of the files from https://www.cs.toronto.edu/~kriz/cifar.html, extracted
under ``root``:

* python version: ``root/cifar-100-python/{train,test,meta}`` (CIFAR-10:
  ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``), pickled dicts
  holding ``data`` (uint8 N x 3072: the 1024 red, then green, then blue pixels of each
  32 x 32 image, rows first) and ``fine_labels`` (CIFAR-10: ``labels``). They are read with
  a restricted unpickler that builds numpy arrays, lists, dicts and strings and refuses
  anything else, so a tampered file cannot run code.
* binary version: ``root/cifar-100-binary/{train,test}.bin`` (CIFAR-10:
  ``root/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``), records of the label
  bytes (CIFAR-100: coarse then fine; CIFAR-10: one) followed by the 3072 pixel bytes.

The python version is used when both are present. Images reach the transform as 32 x 32 RGB
PIL images, as with torchvision/flowvision.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from libai.data.datasets.image_base import ImageClassificationDataset, reject_unknown_arguments
from libai.data.errors import DataError
from libai.utils.logger import log_ignored_arguments

_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _CifarFiles:
    """Where one CIFAR variant keeps its files and how its records look."""

    name: str  # "CIFAR-100"
    archive: str  # the python version's tarball, named in errors
    python_dir: str
    python_files: dict  # train (bool) -> file names
    python_meta: str
    names_key: str  # class names in the meta pickle
    label_key: str  # the labels a sample gets
    binary_dir: str
    binary_files: dict  # train (bool) -> file names
    binary_names: str  # class names, one a line
    label_bytes: int  # leading label bytes of a binary record; the last one is the label
    num_classes: int


CIFAR100_FILES = _CifarFiles(
    name="CIFAR-100",
    archive="cifar-100-python.tar.gz",
    python_dir="cifar-100-python",
    python_files={True: ("train",), False: ("test",)},
    python_meta="meta",
    names_key="fine_label_names",
    label_key="fine_labels",
    binary_dir="cifar-100-binary",
    binary_files={True: ("train.bin",), False: ("test.bin",)},
    binary_names="fine_label_names.txt",
    label_bytes=2,
    num_classes=100,
)

CIFAR10_FILES = _CifarFiles(
    name="CIFAR-10",
    archive="cifar-10-python.tar.gz",
    python_dir="cifar-10-batches-py",
    python_files={True: tuple(f"data_batch_{i}" for i in range(1, 6)), False: ("test_batch",)},
    python_meta="batches.meta",
    names_key="label_names",
    label_key="labels",
    binary_dir="cifar-10-batches-bin",
    binary_files={True: tuple(f"data_batch_{i}.bin" for i in range(1, 6)), False: ("test_batch.bin",)},
    binary_names="batches.meta.txt",
    label_bytes=1,
    num_classes=10,
)


# --------------------------------------------------------------------------------------
# The python version: pickles read without running pickled code
# --------------------------------------------------------------------------------------


def _numpy_multiarray() -> Any:
    try:  # numpy >= 2 (the files may name either module; both mean this one)
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    return multiarray


def _latin1_bytes(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Pickle protocol 2 stores Python 3 bytes as `_codecs.encode(text, "latin1")`; only that
    # use is admitted, not other codecs.
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower() not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is admitted only to rebuild bytes (latin1), not {encoding!r}")
    return text.encode("latin1", errors)


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles only plain data: dicts, lists, strings, numbers and numpy arrays.

    Why: `pickle.load` calls whatever callable a file names (e.g. `os.system`), so loading a
    tampered dataset file would run its code. The CIFAR files need only numpy's array
    reconstruction (and, in Python 3 protocol-2 pickles, bytes rebuilt from latin1 text), so
    every other global is refused before it is looked up.
    """

    def __init__(self, file: Any, path: str, dataset: str) -> None:
        # latin1: the original files were written by Python 2, whose str holds raw bytes.
        super().__init__(file, encoding="latin1")
        self.path, self.dataset = path, dataset
        multiarray = _numpy_multiarray()
        self.allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_bytes}
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self.allowed[(module, "_reconstruct")] = multiarray._reconstruct
            self.allowed[(module, "scalar")] = multiarray.scalar

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self.path}: {self.dataset} files hold only "
                f"arrays, lists, dicts and strings; re-download the dataset"
            )
        return found


def load_plain_pickle(path: str, dataset: str) -> Any:
    """The content of pickle `path`, built by `_PlainDataUnpickler` (no pickled code runs)."""
    with open(path, "rb") as f:
        try:
            return _PlainDataUnpickler(f, path, dataset).load()
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to parse means a damaged file
            raise DataError(
                f"{path} is not a readable {dataset} pickle ({type(exc).__name__}: {exc}): re-download the dataset"
            ) from None


def _text_keys(mapping: Any, path: str, dataset: str) -> dict:
    """`mapping` with bytes keys decoded (files written by Python 3 have bytes keys)."""
    if not isinstance(mapping, dict):
        raise DataError(f"{path} holds a {type(mapping).__name__}, not the dict of a {dataset} file: re-download it")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in mapping.items()}


def _text(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def read_python_batch(path: str, files: _CifarFiles) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(pixels N x 3072 uint8, {label key: N int64}) of one python-version file."""
    batch = _text_keys(load_plain_pickle(path, files.name), path, files.name)
    missing = [key for key in ("data", files.label_key) if key not in batch]
    if missing:
        raise DataError(f"{path} lacks {missing} (has {sorted(batch)}): it is not a {files.name} data file")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array N x {_PIXELS}, got {type(data).__name__} {shape}")
    labels = {}
    for key in ("fine_labels", "coarse_labels", "labels"):
        if key in batch:
            labels[key] = np.asarray(batch[key], dtype=np.int64).reshape(-1)
            if len(labels[key]) != len(data):
                raise DataError(f"{path} has {len(data)} images but {len(labels[key])} {key}: re-download it")
    return data, labels


def read_binary_batch(path: str, files: _CifarFiles) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(pixels N x 3072 uint8, {label key: N int64}) of one binary-version file."""
    record = files.label_bytes + _PIXELS
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise DataError(
            f"{path} has {raw.size} bytes, not a whole number of {record}-byte {files.name} records: "
            f"it is truncated or not a {files.name} binary file; re-download it"
        )
    records = raw.reshape(-1, record)
    labels = {files.label_key: records[:, files.label_bytes - 1].astype(np.int64)}
    if files.label_bytes == 2:
        labels["coarse_labels"] = records[:, 0].astype(np.int64)
    return np.ascontiguousarray(records[:, files.label_bytes:]), labels


# --------------------------------------------------------------------------------------
# Finding the files
# --------------------------------------------------------------------------------------


def _existing(folder: str, names: tuple) -> Optional[list[str]]:
    paths = [os.path.join(folder, name) for name in names]
    return paths if all(os.path.isfile(p) for p in paths) else None


def find_cifar_files(root: str, train: bool, files: _CifarFiles, download: bool = False) -> tuple[str, list[str]]:
    """("python" or "binary", the split's file paths) found under `root`, or a clear error."""
    python = _existing(os.path.join(root, files.python_dir), files.python_files[train])
    if python is not None:
        return "python", python
    binary = _existing(os.path.join(root, files.binary_dir), files.binary_files[train])
    if binary is not None:
        return "binary", binary
    raise FileNotFoundError(_missing_message(root, train, files, download))


def _missing_message(root: str, train: bool, files: _CifarFiles, download: bool) -> str:
    split = "train" if train else "test"
    python = f"{root}/{files.python_dir}/{{{','.join(files.python_files[train])}}}"
    binary = f"{root}/{files.binary_dir}/{{{','.join(files.binary_files[train])}}}"
    if os.path.isdir(root):
        found = f"{root} holds {sorted(os.listdir(root))[:10]}"
    else:
        found = f"{root} does not exist"
    archive = os.path.join(root, files.archive)
    hint = f"; {archive} is there: extract it with `tar -xzf {archive} -C {root}`" if os.path.isfile(archive) else ""
    refusal = (
        "download=True cannot fetch them: this project never downloads at run time. " if download else ""
    )
    return (
        f"{files.name} {split} files not found: {refusal}Put the python version ({files.archive} extracted) "
        f"at {python} or the binary version at {binary}; {found}{hint}"
    )


def _class_names(fmt: str, paths: list[str], files: _CifarFiles) -> list[str]:
    """Class names from the meta file next to the data, or "0".."N-1" when it is absent."""
    folder = os.path.dirname(paths[0])
    if fmt == "python":
        meta_path = os.path.join(folder, files.python_meta)
        if os.path.isfile(meta_path):
            meta = _text_keys(load_plain_pickle(meta_path, files.name), meta_path, files.name)
            if files.names_key in meta:
                return [_text(name) for name in meta[files.names_key]]
    else:
        names_path = os.path.join(folder, files.binary_names)
        if os.path.isfile(names_path):
            with open(names_path, encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
    return [str(i) for i in range(files.num_classes)]


# --------------------------------------------------------------------------------------
# The datasets
# --------------------------------------------------------------------------------------


class _CifarDataset(ImageClassificationDataset):
    """A CIFAR variant read from `root` (see the module docstring), as LiBai samples."""

    FILES: _CifarFiles

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Optional[Callable] = None,
        download: bool = False,
        dataset_name: str = "",
        target_transform: Optional[Callable] = None,
        **kwargs,
    ) -> None:
        owner = type(self).__name__
        reject_unknown_arguments(
            owner, "root, train, transform, download, dataset_name, target_transform", kwargs
        )
        self.root = os.path.expanduser(str(root))
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        self.dataset_name = dataset_name
        self.format, self.files = find_cifar_files(self.root, self.train, self.FILES, download)
        if download:
            log_ignored_arguments(owner, f"the {self.FILES.name} files are read from {self.root}; "
                                  "nothing is ever downloaded", download=download)
        self.data, labels = self._read_split()
        self.targets: list[int] = labels[self.FILES.label_key].tolist()
        self.coarse_targets: Optional[list[int]] = (
            labels["coarse_labels"].tolist() if "coarse_labels" in labels else None
        )
        self.classes = _class_names(self.format, self.files, self.FILES)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    def _read_split(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(images N x 32 x 32 x 3 uint8, labels) of this split, its files concatenated."""
        read = read_python_batch if self.format == "python" else read_binary_batch
        parts = [read(path, self.FILES) for path in self.files]
        pixels = np.concatenate([data for data, _ in parts])
        labels = {key: np.concatenate([part[key] for _, part in parts]) for key in parts[0][1]}
        fine = labels[self.FILES.label_key]
        if fine.size and (fine.min() < 0 or fine.max() >= self.FILES.num_classes):
            raise DataError(
                f"{self.files}: {self.FILES.label_key} range over [{fine.min()}, {fine.max()}], outside "
                f"0..{self.FILES.num_classes - 1}: these are not {self.FILES.name} files"
            )
        # Each row is 3 planes of 32 x 32 (channels first); PIL wants height x width x channels.
        images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images), labels

    def __len__(self) -> int:
        return len(self.targets)

    def _load(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[index]), self.targets[index]

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} images, {self.format} version from {self.root})"


class CIFAR100Dataset(_CifarDataset):
    """CIFAR-100 (100 fine classes) from local files, as `Instance(images=..., labels=...)`.

    LiBai's signature. `root` holds ``cifar-100-python/{train,test,meta}`` or
    ``cifar-100-binary/{train,test}.bin``; labels are the fine labels (`coarse_targets` keeps
    the 20 superclasses). The transform receives a 32 x 32 RGB PIL image. `download=True`
    fetches nothing: with the files in place it is logged and ignored; without them the
    error says where to put them. `dataset_name` is kept as `self.dataset_name`.
    """

    FILES = CIFAR100_FILES

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Optional[Callable] = None,
        download: bool = False,
        dataset_name: str = "cifar100",
        **kwargs,
    ) -> None:
        super().__init__(root, train, transform, download, dataset_name, **kwargs)


class CIFAR10Dataset(_CifarDataset):
    """CIFAR-10 from local files, as `Instance(images=..., labels=...)`; LiBai's signature.

    `root` holds ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` or
    ``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``. Otherwise as `CIFAR100Dataset`.
    """

    FILES = CIFAR10_FILES

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Optional[Callable] = None,
        download: bool = False,
        dataset_name: str = "cifar10",
        **kwargs,
    ) -> None:
        super().__init__(root, train, transform, download, dataset_name, **kwargs)
