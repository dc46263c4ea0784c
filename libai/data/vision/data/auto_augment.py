"""RandAugment on PIL images, configured by timm/flowvision's strings ("rand-m9-mstd0.5-inc1").

`rand_augment_transform(config_str, hparams)` returns a transform that applies `n` operations
drawn (with replacement) from a list of 15, each with probability 0.5, at magnitude `m` on a
0..10 scale. The config string is ``rand`` followed by dash-separated sections:

- ``m<int>``: magnitude (default 10);
- ``n<int>``: operations per image (default 2);
- ``mstd<float>``: each op draws its magnitude from N(m, mstd) (``> 100``: uniform in [0, m]);
- ``mmax<int>``: upper clip of the magnitude (default 10);
- ``inc<0|1>``: 1 uses the variants whose strength grows with the magnitude;
- ``w<int>``: 0 draws the operations with timm's fixed weights, without replacement.

`hparams` keys: ``translate_const`` (pixels at magnitude 10 of the absolute translations;
default 250), ``translate_pct`` (fraction of the image for the relative ones; 0.45),
``img_mean`` (fill colour of the geometric ops; (128, 128, 128)), ``interpolation`` (an
`InterpolationMode`, its name, a PIL filter, or a list to draw from per op; default a draw of
bilinear or bicubic). Every draw goes through `libai.data.vision.rng`.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Optional, Sequence

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image, ImageEnhance, ImageOps

from libai.data.vision import rng
from libai.data.vision.transforms.functional import InterpolationMode, pil_fill, pil_resample

__all__ = [
    "AugmentOp",
    "RandAugment",
    "RAND_TRANSFORMS",
    "RAND_INCREASING_TRANSFORMS",
    "parse_rand_augment",
    "rand_augment_ops",
    "rand_augment_transform",
]

_MAX_LEVEL = 10.0
_FILL = (128, 128, 128)
_DEFAULT_HPARAMS = dict(translate_const=250, img_mean=_FILL)
_RANDOM_INTERPOLATION = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)


# ---- operations on a PIL image: op(img, *level_args, fill=..., resample=...) ----------


def _affine(img: Image.Image, matrix: tuple, fill: Any, resample: Any) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=pil_fill(img, fill))


def _shear_x(img, factor, **kw):
    return _affine(img, (1, factor, 0, 0, 1, 0), **kw)


def _shear_y(img, factor, **kw):
    return _affine(img, (1, 0, 0, factor, 1, 0), **kw)


def _translate_x_abs(img, pixels, **kw):
    return _affine(img, (1, 0, pixels, 0, 1, 0), **kw)


def _translate_y_abs(img, pixels, **kw):
    return _affine(img, (1, 0, 0, 0, 1, pixels), **kw)


def _translate_x_rel(img, pct, **kw):
    return _translate_x_abs(img, pct * img.size[0], **kw)


def _translate_y_rel(img, pct, **kw):
    return _translate_y_abs(img, pct * img.size[1], **kw)


def _rotate(img, degrees, fill, resample):
    return img.rotate(degrees, resample=resample, fillcolor=pil_fill(img, fill))


def _auto_contrast(img, **_):
    return ImageOps.autocontrast(img)


def _invert(img, **_):
    return ImageOps.invert(img)


def _equalize(img, **_):
    return ImageOps.equalize(img)


def _solarize(img, threshold, **_):
    return ImageOps.solarize(img, threshold)


def _solarize_add(img, add, threshold=128, **_):
    """Add `add` (clipped at 255) to the pixels below `threshold` (L and RGB images)."""
    if img.mode not in ("L", "RGB"):
        return img
    lut = [min(255, i + add) if i < threshold else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize(img, bits, **_):
    return img if bits >= 8 else ImageOps.posterize(img, bits)


def _enhancer(kind: Callable) -> Callable:
    def enhance(img, factor, **_):
        return kind(img).enhance(factor)

    return enhance


# ---- magnitude (0..10) → operation arguments ----------------------------------------


def _randomly_negate(value: float) -> float:
    return -value if rng.rand() > 0.5 else value


def _rotate_arg(level, _):
    return (_randomly_negate(level / _MAX_LEVEL * 30.0),)


def _enhance_arg(level, _):
    return (level / _MAX_LEVEL * 1.8 + 0.1,)


def _enhance_increasing_arg(level, _):
    # Strength grows with the magnitude whichever way the factor moves from 1.
    return (max(0.1, 1.0 + _randomly_negate(level / _MAX_LEVEL * 0.9)),)


def _shear_arg(level, _):
    return (_randomly_negate(level / _MAX_LEVEL * 0.3),)


def _translate_abs_arg(level, hparams):
    return (_randomly_negate(level / _MAX_LEVEL * float(hparams["translate_const"])),)


def _translate_rel_arg(level, hparams):
    return (_randomly_negate(level / _MAX_LEVEL * hparams.get("translate_pct", 0.45)),)


def _posterize_arg(level, _):
    return (int(level / _MAX_LEVEL * 4),)  # keep 0..4 most significant bits


def _posterize_increasing_arg(level, hparams):
    return (4 - _posterize_arg(level, hparams)[0],)


def _solarize_arg(level, _):
    return (int(level / _MAX_LEVEL * 256),)


def _solarize_increasing_arg(level, hparams):
    return (256 - _solarize_arg(level, hparams)[0],)


def _solarize_add_arg(level, _):
    return (int(level / _MAX_LEVEL * 110),)


# name → (operation, magnitude-to-arguments or None)
_OPS: dict[str, tuple[Callable, Optional[Callable]]] = {
    "AutoContrast": (_auto_contrast, None),
    "Equalize": (_equalize, None),
    "Invert": (_invert, None),
    "Rotate": (_rotate, _rotate_arg),
    "Posterize": (_posterize, _posterize_arg),
    "PosterizeIncreasing": (_posterize, _posterize_increasing_arg),
    "Solarize": (_solarize, _solarize_arg),
    "SolarizeIncreasing": (_solarize, _solarize_increasing_arg),
    "SolarizeAdd": (_solarize_add, _solarize_add_arg),
    "Color": (_enhancer(ImageEnhance.Color), _enhance_arg),
    "ColorIncreasing": (_enhancer(ImageEnhance.Color), _enhance_increasing_arg),
    "Contrast": (_enhancer(ImageEnhance.Contrast), _enhance_arg),
    "ContrastIncreasing": (_enhancer(ImageEnhance.Contrast), _enhance_increasing_arg),
    "Brightness": (_enhancer(ImageEnhance.Brightness), _enhance_arg),
    "BrightnessIncreasing": (_enhancer(ImageEnhance.Brightness), _enhance_increasing_arg),
    "Sharpness": (_enhancer(ImageEnhance.Sharpness), _enhance_arg),
    "SharpnessIncreasing": (_enhancer(ImageEnhance.Sharpness), _enhance_increasing_arg),
    "ShearX": (_shear_x, _shear_arg),
    "ShearY": (_shear_y, _shear_arg),
    "TranslateX": (_translate_x_abs, _translate_abs_arg),
    "TranslateY": (_translate_y_abs, _translate_abs_arg),
    "TranslateXRel": (_translate_x_rel, _translate_rel_arg),
    "TranslateYRel": (_translate_y_rel, _translate_rel_arg),
}

RAND_TRANSFORMS = [
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
]
RAND_INCREASING_TRANSFORMS = [
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
]
# timm's weights for "w0", by position in the lists above.
_CHOICE_WEIGHTS_0 = [0.025, 0.005, 0.0, 0.3, 0.0, 0.005, 0.005, 0.025, 0.005, 0.005, 0.025, 0.2, 0.2, 0.1, 0.1]


def _plain(hparams: Any) -> dict:
    """`hparams` as a plain dict (a config passes a DictConfig with lists for tuples)."""
    if isinstance(hparams, (DictConfig, ListConfig)):
        hparams = OmegaConf.to_container(hparams, resolve=True)
    return dict(hparams or {})


def _resample(interpolation: Any) -> Any:
    """A PIL filter, or a tuple of them to draw from per call."""
    if isinstance(interpolation, (list, tuple, ListConfig)):
        return tuple(_resample(i) for i in interpolation)
    if isinstance(interpolation, (InterpolationMode, str)):
        return pil_resample(interpolation)
    return interpolation


class AugmentOp:
    """One RandAugment operation, applied with probability `prob` at `magnitude` (0..10)."""

    def __init__(self, name: str, prob: float = 0.5, magnitude: float = 10, hparams: Optional[dict] = None) -> None:
        if name not in _OPS:
            raise ValueError(f"unknown augmentation {name!r}: choose from {sorted(_OPS)}")
        hparams = _plain(hparams) if hparams is not None else dict(_DEFAULT_HPARAMS)
        self.name = name
        self.op, self.level_to_args = _OPS[name]
        self.prob = float(prob)
        self.magnitude = float(magnitude)
        self.hparams = hparams
        self.fill = tuple(hparams.get("img_mean", _FILL))
        self.resample = _resample(hparams.get("interpolation", _RANDOM_INTERPOLATION))
        self.magnitude_std = float(hparams.get("magnitude_std", 0))
        self.magnitude_max = hparams.get("magnitude_max", None)

    def _draw_magnitude(self) -> float:
        magnitude = self.magnitude
        if self.magnitude_std == float("inf"):
            magnitude = rng.uniform(0.0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = rng.gauss(magnitude, self.magnitude_std)
        upper = self.magnitude_max or _MAX_LEVEL
        return max(0.0, min(magnitude, upper))

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.prob < 1.0 and rng.rand() > self.prob:
            return img
        magnitude = self._draw_magnitude()
        args = self.level_to_args(magnitude, self.hparams) if self.level_to_args is not None else ()
        resample = self.resample
        if isinstance(resample, tuple):
            resample = resample[rng.randint(0, len(resample))]
        return self.op(img, *args, fill=self.fill, resample=resample)

    def __repr__(self) -> str:
        return f"AugmentOp(name={self.name}, p={self.prob}, m={self.magnitude}, mstd={self.magnitude_std})"


class RandAugment:
    """Apply `num_layers` operations drawn from `ops` (with replacement, or by
    `choice_weights` without replacement) to a PIL image."""

    def __init__(self, ops: Sequence[AugmentOp], num_layers: int = 2, choice_weights: Optional[Sequence[float]] = None) -> None:
        self.ops = list(ops)
        self.num_layers = int(num_layers)
        self.choice_weights = None if choice_weights is None else torch.tensor(choice_weights, dtype=torch.float64)

    def chosen_ops(self) -> list[AugmentOp]:
        """The operations for one image."""
        if self.choice_weights is None:
            picks = rng.choices(len(self.ops), self.num_layers)
        else:
            picks = torch.multinomial(
                self.choice_weights, self.num_layers, replacement=False, generator=rng.current_generator()
            ).tolist()
        return [self.ops[i] for i in picks]

    def __call__(self, img: Image.Image) -> Image.Image:
        if not isinstance(img, Image.Image):
            raise TypeError(
                f"RandAugment works on PIL images, got {type(img).__name__}: put rand_augment_transform "
                f"before ToTensor() in Compose"
            )
        for op in self.chosen_ops():
            img = op(img)
        return img

    def __repr__(self) -> str:
        return f"RandAugment(n={self.num_layers}, ops={[op.name for op in self.ops]})"


# section key → (setting, type of its number)
_SECTIONS = {
    "m": ("magnitude", int),
    "n": ("num_layers", int),
    "mstd": ("magnitude_std", float),
    "mmax": ("magnitude_max", int),
    "inc": ("increasing", int),
    "w": ("weight_idx", int),
}


def parse_rand_augment(config_str: str) -> dict:
    """The settings in a RandAugment string: magnitude, num_layers, magnitude_std,
    magnitude_max, increasing, weight_idx (None where the string does not set them)."""
    sections = str(config_str).split("-")
    if sections[0] != "rand":
        raise ValueError(f"a RandAugment config starts with 'rand', got {config_str!r} (like 'rand-m9-mstd0.5-inc1')")
    settings = dict(magnitude=10, num_layers=2, magnitude_std=None, magnitude_max=None, increasing=0, weight_idx=None)
    for section in sections[1:]:
        match = re.fullmatch(r"([a-z]+)(\d.*)", section)
        if match is None or match.group(1) not in _SECTIONS:
            raise ValueError(
                f"RandAugment section {section!r} in {config_str!r} is not one of m<int>, n<int>, mstd<float>, "
                f"mmax<int>, inc<0|1>, w<int>"
            )
        name, kind = _SECTIONS[match.group(1)]
        try:
            settings[name] = kind(match.group(2))
        except ValueError:
            raise ValueError(f"RandAugment section {section!r} in {config_str!r} has a bad number") from None
    if settings["magnitude_std"] is not None and settings["magnitude_std"] > 100:
        settings["magnitude_std"] = float("inf")  # timm's rule: uniform magnitude in [0, m]
    settings["increasing"] = bool(settings["increasing"])
    if settings["weight_idx"] not in (None, 0):
        raise ValueError(f"RandAugment weights 'w{settings['weight_idx']}' do not exist: only w0 is defined")
    return settings


def rand_augment_ops(magnitude: float = 10, hparams: Optional[dict] = None, transforms: Optional[Sequence[str]] = None) -> list[AugmentOp]:
    """One `AugmentOp` (probability 0.5) per name in `transforms` (default `RAND_TRANSFORMS`)."""
    hparams = _plain(hparams) if hparams is not None else dict(_DEFAULT_HPARAMS)
    return [AugmentOp(name, prob=0.5, magnitude=magnitude, hparams=hparams) for name in transforms or RAND_TRANSFORMS]


def rand_augment_transform(config_str: str, hparams: Optional[dict] = None) -> RandAugment:
    """A RandAugment transform for PIL images from a string like "rand-m9-mstd0.5-inc1"
    (see the module docstring for the sections and `hparams`)."""
    settings = parse_rand_augment(config_str)
    hparams = _plain(hparams) if hparams is not None else dict(_DEFAULT_HPARAMS)
    hparams.setdefault("translate_const", _DEFAULT_HPARAMS["translate_const"])
    if settings["magnitude_std"] is not None:
        hparams.setdefault("magnitude_std", settings["magnitude_std"])
    if settings["magnitude_max"] is not None:
        hparams.setdefault("magnitude_max", settings["magnitude_max"])
    names = RAND_INCREASING_TRANSFORMS if settings["increasing"] else RAND_TRANSFORMS
    ops = rand_augment_ops(settings["magnitude"], hparams, names)
    weights = None if settings["weight_idx"] is None else [w / sum(_CHOICE_WEIGHTS_0) for w in _CHOICE_WEIGHTS_0]
    return RandAugment(ops, settings["num_layers"], choice_weights=weights)
