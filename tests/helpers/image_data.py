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


FINE_NAMES = [f"fine{i}" for i in range(100)]


def cifar_arrays(n: int, seed: int, num_classes: int = 100) -> tuple:
    """Random CIFAR rows: pixels [n, 3072] uint8, fine labels, coarse labels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return pixels, rng.integers(0, num_classes, size=n).tolist(), rng.integers(0, 20, size=n).tolist()


def write_cifar100_python(root: Path, n_train: int = 5, n_test: int = 3) -> dict:
    """CIFAR-100's python version under ``root/cifar-100-python`` as Python 3 writes it at
    protocol 2, with bytes keys; returns {split: (pixels [n, 3072], fine, coarse)}."""
    key = str.encode
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays = {}
    for split, n, seed in [("train", n_train, 0), ("test", n_test, 1)]:
        pixels, fine, coarse = cifar_arrays(n, seed)
        arrays[split] = (pixels, fine, coarse)
        content = {key("filenames"): [f"img_{i}.png".encode() for i in range(n)], key("batch_label"): b"batch",
                   key("fine_labels"): fine, key("coarse_labels"): coarse, key("data"): pixels}
        with open(folder / split, "wb") as f:
            pickle.dump(content, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({key("fine_label_names"): [n.encode() for n in FINE_NAMES],
                     key("coarse_label_names"): [b"c"] * 20}, f, protocol=2)
    return arrays
