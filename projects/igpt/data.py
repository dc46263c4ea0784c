"""MNIST digits as sequences of pixel tokens, for generative pixel pretraining (iGPT).

Each digit is shrunk to `image_size` x `image_size` (area average), and each pixel becomes
the index of the nearest of `num_clusters` intensity centres: a k-means on the training
pixels, fitted once and saved to `clusters_file` (next to the other data a project builds,
`data/` by default), so every later run, split and inference pipeline reads the same
vocabulary. A digit is then a sequence in raster order, read left to right, top to bottom.

A sample is `Instance(input_ids=[start, p_0, ..., p_{S-2}], pixel_labels=[p_0, ..., p_{S-1}],
labels=digit)`: the start token (id `num_clusters`) lets the model predict the first pixel
too, and every position's target is the next pixel.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from libai.data import DistTensorData, Instance
from libai.data.datasets import MNISTDataset
from libai.utils import distributed as dist

logger = logging.getLogger(__name__)

DEFAULT_CLUSTERS_FILE = "data/igpt/{digits}_{size}px_{k}clusters.npy"


def shrink_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 images [n, H, W] -> float32 [n, image_size, image_size] in [0, 1] (area average)."""
    pixels = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)[:, None]
    return F.interpolate(pixels, size=(image_size, image_size), mode="area")[:, 0].numpy()


def fit_pixel_clusters(pixels: np.ndarray, num_clusters: int, iterations: int = 50) -> np.ndarray:
    """Sorted intensity centres [num_clusters] of a 1-D k-means (Lloyd's algorithm) over
    `pixels`, started evenly spaced over their range, so the result is deterministic.
    (Quantile starts would crowd into MNIST's black background, where Lloyd's steps
    cannot move them out.)"""
    values = np.sort(np.asarray(pixels, dtype=np.float64).ravel())
    centres = np.linspace(values[0], values[-1], num_clusters)
    running_sum = np.r_[0.0, np.cumsum(values)]
    for _ in range(iterations):
        # In 1-D each cluster is the interval between the midpoints of neighbouring centres.
        bounds = np.r_[0, np.searchsorted(values, (centres[1:] + centres[:-1]) / 2), len(values)]
        counts = np.diff(bounds)
        sums = running_sum[bounds[1:]] - running_sum[bounds[:-1]]
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centres)  # an empty cluster stays put
        if np.allclose(updated, centres):
            break
        centres = np.sort(updated)
    return centres.astype(np.float32)


def quantize(pixels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The index of the nearest centre for each pixel (uint8, same shape as `pixels`)."""
    edges = (centres[1:] + centres[:-1]) / 2
    return np.searchsorted(edges, pixels).astype(np.uint8)


def default_clusters_file(root: Optional[str], image_size: int, num_clusters: int) -> str:
    """Where `PixelSequences` saves its centres when not told: one file per digits folder,
    image size and vocabulary, so runs that differ in any of them never share centres."""
    digits = os.path.basename(os.path.normpath(root)) if root else "mnist5k"
    return DEFAULT_CLUSTERS_FILE.format(digits=digits, size=image_size, k=num_clusters)


def load_or_fit_clusters(clusters_file: str, root: Optional[str], image_size: int, num_clusters: int) -> np.ndarray:
    """The centres saved in `clusters_file`, fitted on the training digits of `root` (None:
    the shipped ones) and saved there on first use (by one process per machine)."""

    def fit_and_save() -> None:
        train_pixels = shrink_images(MNISTDataset(root, train=True).images, image_size)
        centres = fit_pixel_clusters(train_pixels, num_clusters)
        os.makedirs(os.path.dirname(os.path.abspath(clusters_file)), exist_ok=True)
        tmp = f"{clusters_file}.tmp-{os.getpid()}.npy"
        np.save(tmp, centres)
        os.replace(tmp, clusters_file)
        logger.info("Fitted %d pixel clusters on the training digits: saved to %s", num_clusters, clusters_file)

    dist.build_once_per_machine(lambda: os.path.exists(clusters_file), fit_and_save)
    centres = np.load(clusters_file)
    if centres.shape != (num_clusters,):
        raise ValueError(
            f"{clusters_file} holds {centres.shape[0]} pixel clusters, not num_clusters={num_clusters}: "
            f"delete it to fit new ones, or point clusters_file elsewhere"
        )
    return centres


class PixelSequences(Dataset):
    """MNIST (or Fashion-MNIST, with `root`) digits as pixel-token sequences; see the module
    docstring for a sample's fields.

    Args:
        root: a folder of IDX files, or None for the 5,000 shipped digits.
        train: the training or the test split.
        image_size: side of the shrunk image; a sequence has image_size**2 pixels.
        num_clusters: the pixel vocabulary (the start token is one more id).
        clusters_file: where the cluster centres are saved (default
            `data/igpt/{mnist5k or root's folder name}_{image_size}px_{num_clusters}clusters.npy`).
        dataset_name: the name evaluation results are reported under.
    """

    def __init__(
        self,
        root: Optional[str] = None,
        train: bool = True,
        image_size: int = 14,
        num_clusters: int = 16,
        clusters_file: Optional[str] = None,
        dataset_name: str = "mnist pixels",
    ) -> None:
        self.dataset_name = dataset_name
        self.image_size, self.num_clusters = image_size, num_clusters
        self.clusters_file = clusters_file or default_clusters_file(root, image_size, num_clusters)
        self.centres = load_or_fit_clusters(self.clusters_file, root, image_size, num_clusters)
        digits = MNISTDataset(root, train=train)
        shrunk = shrink_images(digits.images, image_size).reshape(len(digits), -1)
        self.tokens = torch.from_numpy(quantize(shrunk, self.centres).astype(np.int64))
        self.labels = torch.from_numpy(np.asarray(digits.labels, dtype=np.int64))

    @property
    def start_token(self) -> int:
        """The id before the first pixel."""
        return self.num_clusters

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Instance:
        pixels = self.tokens[index]
        inputs = torch.cat((torch.tensor([self.start_token]), pixels[:-1]))
        return Instance(
            input_ids=DistTensorData(inputs, placement_idx=0),
            # Targets are read by the heads on the last pipeline stage.
            pixel_labels=DistTensorData(pixels, placement_idx=-1),
            labels=DistTensorData(self.labels[index], placement_idx=-1),
        )
