"""ImageNet (or any image classification set) read from a folder per class.

Layout, as torchvision's/flowvision's ``ImageFolder`` reads it::

    root/train/<class>/*.JPEG     (train=True)
    root/val/<class>/*.JPEG       (train=False)

Classes are the sub-folder names sorted, numbered 0, 1, ...; each class's image files
(searched recursively, by extension) are sorted by path. The folder is scanned once when the
dataset is built; images are opened with PIL and converted to RGB when a sample is read.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from PIL import Image

from libai.data.datasets.image_base import ImageClassificationDataset, reject_unknown_arguments
from libai.data.errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_SHOWN = 5  # names listed in an error before "..."


def _layout(split: str) -> str:
    return f"root/{split}/<class>/*.JPEG"


def _has_image_extension(path: str) -> bool:
    return path.lower().endswith(IMG_EXTENSIONS)


def _preview(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return f"[{shown}{', ...' if len(names) > _SHOWN else ''}] ({len(names)} in all)"


def find_classes(split_dir: str, split: str) -> list[str]:
    """The class folder names under `split_dir`, sorted; a clear error if there are none."""
    if not os.path.isdir(split_dir):
        parent = os.path.dirname(split_dir)
        found = f"{parent} holds {_preview(sorted(os.listdir(parent)))}" if os.path.isdir(parent) else (
            f"{parent} does not exist"
        )
        raise FileNotFoundError(
            f"ImageNetDataset: no folder {split_dir}: expected the layout {_layout(split)} "
            f"(one sub-folder of images per class); {found}"
        )
    entries = sorted(os.scandir(split_dir), key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir()]
    if not classes:
        images = [e.name for e in entries if e.is_file() and _has_image_extension(e.name)]
        found = (
            f"it holds {len(images)} image files but no class folders: sort them into one "
            f"folder per class" if images else f"it holds no class folders ({len(entries)} entries)"
        )
        raise DataError(f"ImageNetDataset: {split_dir} does not match {_layout(split)}: {found}")
    return classes


def list_samples(
    split_dir: str, classes: list[str], split: str, is_valid_file: Optional[Callable[[str], bool]] = None
) -> list[tuple[str, int]]:
    """(path, class index) of every image, class by class, paths sorted within a class."""
    accept = is_valid_file if is_valid_file is not None else _has_image_extension
    samples: list[tuple[str, int]] = []
    empty = []
    for index, name in enumerate(classes):
        found = [
            os.path.join(folder, file)
            for folder, _, files in sorted(os.walk(os.path.join(split_dir, name), followlinks=True))
            for file in sorted(files)
            if accept(os.path.join(folder, file))
        ]
        if not found:
            empty.append(name)
        samples.extend((path, index) for path in found)
    if empty:
        what = "files accepted by is_valid_file" if is_valid_file is not None else (
            f"image files ({', '.join(IMG_EXTENSIONS)})"
        )
        raise DataError(
            f"ImageNetDataset: class folder(s) {_preview(empty)} under {split_dir} hold no {what}: "
            f"expected the layout {_layout(split)}; remove the empty folders or add their images"
        )
    return samples


def open_rgb(path: str) -> Image.Image:
    """The image at `path`, decoded and converted to RGB; a DataError naming it if PIL cannot read it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL raises UnidentifiedImageError (an OSError) for unknown formats, OSError for
        # truncated files, SyntaxError/ValueError for some malformed headers.
        raise DataError(
            f"ImageNetDataset: cannot read image {path} ({type(exc).__name__}: {exc}): the layout "
            f"root/<train|val>/<class>/*.JPEG must hold image files PIL can open; replace or remove it"
        ) from None


class ImageNetDataset(ImageClassificationDataset):
    """ImageNet 2012 classification (or any folder-per-class image set) as LiBai samples.

    Reads ``root/train/<class>/*`` when `train`, else ``root/val/<class>/*``. Samples are
    `Instance(images=..., labels=...)`; the transform receives the RGB PIL image (see
    `ImageClassificationDataset`). As with LiBai (whose class extends flowvision's
    `ImageFolder`), `target_transform`, `loader` (path -> image) and `is_valid_file`
    (path -> bool, replacing the extension check) may be given; other arguments are refused.

    Attributes: `classes` (sorted folder names), `class_to_idx`, `samples`/`imgs` (path,
    class index) and `targets`.
    """

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Optional[Callable] = None,
        target_transform: Optional[Callable] = None,
        loader: Optional[Callable[[str], object]] = None,
        is_valid_file: Optional[Callable[[str], bool]] = None,
        **kwargs,
    ) -> None:
        reject_unknown_arguments(
            "ImageNetDataset", "root, train, transform, target_transform, loader, is_valid_file", kwargs
        )
        self.root = os.path.expanduser(str(root))
        self.train = bool(train)
        self.split = "train" if self.train else "val"
        self.split_root = os.path.join(self.root, self.split)
        self.transform = transform
        self.target_transform = target_transform
        self.loader = loader if loader is not None else open_rgb
        self.classes = find_classes(self.split_root, self.split)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.samples = list_samples(self.split_root, self.classes, self.split, is_valid_file)
        self.imgs = self.samples
        self.targets = [target for _, target in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[object, int]:
        path, target = self.samples[index]
        return self.loader(path), target

    def __repr__(self) -> str:
        return (
            f"ImageNetDataset({self.split}, {len(self)} images of {len(self.classes)} classes "
            f"from {self.split_root})"
        )
