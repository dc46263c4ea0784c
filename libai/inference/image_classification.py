"""`ImageClassificationPipeline`: an image in, label and score out (MNIST, ViT, ...)."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
from omegaconf import ListConfig

from libai.config import instantiate, try_get_key

from .basic import PipelineError, reject_unknown
from .classification import ClassificationPipeline


class ImageClassificationPipeline(ClassificationPipeline):
    """`pipe(image or [images])` -> `{"label", "score"}` per image.

    An image is a file path (read with Pillow), a PIL image, a numpy array (HxW or HxWxC) or
    a tensor already transformed (CxHxW). It gets the config's test transform (that of the
    first `dataloader.test` dataset, else of `dataloader.train`'s), then the model's
    `forward(images=...)`; its `prediction_scores` go through a softmax.

    Parameters (constructor defaults, or per call): `image_mode` (Pillow mode a file is
    converted to, e.g. "L" for MNIST digits or "RGB"; default: as stored, RGB for palettes),
    `labels` (class names in index order; default: the class index), `return_all_scores`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        node = _find_transform(self.cfg)
        self.transform = instantiate(node) if node is not None else None

    def _parse_parameters(
        self,
        image_mode: Optional[str] = None,
        labels: Optional[Sequence[str]] = None,
        return_all_scores: bool = False,
        **unknown: Any,
    ) -> tuple[dict, dict, dict]:
        reject_unknown(type(self).__name__, unknown)
        return {"image_mode": image_mode}, {}, {"labels": labels, "return_all_scores": return_all_scores}

    def preprocess(self, inputs: Any, image_mode: Optional[str] = None) -> dict:
        """A batch [n, C, H, W] of transformed images."""
        single = not isinstance(inputs, (list, tuple))
        images = [inputs] if single else list(inputs)
        if not images:
            raise PipelineError("give an image (path, PIL image, array or tensor) or a non-empty list of them")
        batch = torch.stack([self._to_tensor(image, image_mode) for image in images])
        return {"inputs": {"images": batch}, "single": single}

    def _to_tensor(self, image: Any, image_mode: Optional[str]) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            return image.float()
        if isinstance(image, (str, os.PathLike)):
            image = _read_image(os.fspath(image), image_mode)
        elif not isinstance(image, np.ndarray) and image_mode is not None and hasattr(image, "convert"):
            image = image.convert(image_mode)
        if self.transform is None:
            raise PipelineError("the config has no test transform to turn an image into a tensor: pass tensors")
        out = self.transform(image)
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(out)

def _read_image(path: str, image_mode: Optional[str]):
    if not os.path.isfile(path):
        raise PipelineError(f"image file {path} does not exist")
    from PIL import Image

    with Image.open(path) as image:
        mode = image_mode or (image.mode if image.mode in ("L", "RGB") else "RGB")
        return image.convert(mode)


def _find_transform(cfg) -> Any:
    """The transform node of the first test dataset, else of the first training dataset."""
    candidates = []
    tests = try_get_key(cfg, "dataloader.test", default=None) or []
    candidates += [try_get_key(loader, "dataset", default=None) for loader in tests]
    candidates.append(try_get_key(cfg, "dataloader.train.dataset", default=None))
    for dataset in candidates:
        for node in dataset if isinstance(dataset, (list, tuple, ListConfig)) else [dataset]:
            transform = try_get_key(node, "transform", default=None) if node is not None else None
            if transform is not None:
                return transform
    return None
