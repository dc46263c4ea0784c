"""Small image data in the layouts LiBai's vision configs read, made in a test's folder."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_image_folder(root: Path, classes: int = 2, per_class: int = 4, size: int = 32, seed: int = 0) -> Path:
    """An ImageNet-style folder: ``root/{train,val}/class_<k>/img_<i>.JPEG`` of random RGB images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img_{i}.JPEG", quality=95)
    return root


def write_cifar100_python(root: Path, train: int = 8, test: int = 8, seed: int = 0) -> dict:
    """CIFAR-100's python version under ``root/cifar-100-python`` (pickled dicts of arrays,
    protocol 2 with bytes keys, as the real files are); returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, count in (("train", train), ("test", test)):
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, size=count).tolist()
        record = {
            b"filenames": [f"img_{i}.png".encode() for i in range(count)],
            b"fine_labels": fine,
            b"coarse_labels": [label // 5 for label in fine],
            b"data": data,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(record, f, protocol=2)
        written[split] = (data, fine)
    meta = {b"fine_label_names": [f"class_{k}".encode() for k in range(100)],
            b"coarse_label_names": [f"super_{k}".encode() for k in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written
