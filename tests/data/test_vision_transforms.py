"""libai.data.vision (flowvision's import paths): each transform against its documented
behaviour, and augmentation that does not depend on the data-parallel layout or workers."""
import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from libai.data import CyclicSampler, DistTensorData, Instance, build_image_train_loader
from libai.data import transforms as libai_transforms
from libai.data.vision import SampleIndex, augmentation_rng, transforms
from libai.data.vision.data import Mixup
from libai.data.vision.data.auto_augment import (
    RAND_INCREASING_TRANSFORMS,
    RAND_TRANSFORMS,
    AugmentOp,
    RandAugment,
    parse_rand_augment,
    rand_augment_transform,
)
from libai.data.vision.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from libai.data.vision.data.mixup import cutmix_bbox_and_lam
from libai.data.vision.data.random_erasing import RandomErasing
from libai.data.vision.loss.cross_entropy import SoftTargetCrossEntropy
from libai.data.vision.transforms import InterpolationMode
from libai.data.vision.transforms.functional import str_to_interp_mode


def _pil(height=12, width=16, seed=0):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


# ---- transforms -----------------------------------------------------------------------


def test_str_to_interp_mode_maps_names():
    for name in ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"):
        assert str_to_interp_mode(name) is InterpolationMode[name.upper()]
        assert str_to_interp_mode(name).value == name
    # A saved config writes the enum's name; it reads back to the same mode.
    assert transforms.Resize(4, interpolation="BICUBIC").interpolation is InterpolationMode.BICUBIC
    with pytest.raises(ValueError, match="unknown interpolation 'cubic'"):
        str_to_interp_mode("cubic")


def test_libai_data_transforms_are_the_vision_transforms():
    for name in libai_transforms.__all__:
        assert getattr(libai_transforms, name) is getattr(transforms, name)


def test_resize_and_center_crop_on_pil_and_tensor():
    img = _pil(12, 16)
    out = transforms.Resize(6, interpolation=InterpolationMode.BICUBIC)(img)
    assert isinstance(out, Image.Image) and out.size == (8, 6)  # shorter side 6, aspect kept
    assert transforms.Resize((5, 7))(transforms.ToTensor()(img)).shape == (3, 5, 7)
    crop = transforms.CenterCrop(4)(img)
    assert crop.size == (4, 4)
    tensor = transforms.ToTensor()(img)
    assert torch.equal(transforms.ToTensor()(crop), transforms.CenterCrop(4)(tensor))
    assert torch.equal(tensor[:, 4:8, 6:10], transforms.CenterCrop(4)(tensor))
    # Bigger than the image: zero padding around it, for PIL as for tensors.
    padded = transforms.ToTensor()(transforms.CenterCrop((14, 16))(img))
    assert torch.equal(padded, transforms.CenterCrop((14, 16))(tensor))
    assert padded[:, 0].abs().sum() == 0 and torch.equal(padded[:, 1:13], tensor)
    with pytest.raises(ValueError, match="resize the PIL image"):
        transforms.Resize(4, interpolation="lanczos")(tensor)


def test_random_resized_crop_shapes_windows_and_fallback():
    img, tensor = _pil(12, 16), transforms.ToTensor()(_pil(12, 16))
    rrc = transforms.RandomResizedCrop((5, 6), interpolation=str_to_interp_mode("bicubic"))
    assert rrc(img).size == (6, 5) and rrc(tensor).shape == (3, 5, 6)
    torch.manual_seed(0)
    for _ in range(200):
        top, left, h, w = rrc.window(12, 16)
        assert 0 <= top and top + h <= 12 and 0 <= left and left + w <= 16
        assert 0.08 * 192 * 0.6 <= h * w <= 192  # area fraction in scale (up to rounding)
    # The whole image when scale and ratio allow only that.
    whole = transforms.RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    square = transforms.ToTensor()(_pil(8, 8))
    assert torch.equal(whole(square), square)
    # No window fits a 1x40 strip at ratio ~1: the centred fallback clips to the ratio's bound.
    assert transforms.RandomResizedCrop(4).window(1, 40) == (0, 19, 1, 1)
    with pytest.raises(ValueError, match="scale must be"):
        transforms.RandomResizedCrop(4, scale=(0.9, 0.1))


def test_flip_and_random_crop_on_pil():
    img = _pil(4, 5)
    flipped = transforms.RandomHorizontalFlip(p=1.0)(img)
    assert np.array_equal(np.asarray(flipped), np.asarray(img)[:, ::-1])
    assert transforms.RandomHorizontalFlip(p=0.0)(img) is img
    crop = transforms.RandomCrop(4, padding=1, fill=0)(img)
    assert crop.size == (4, 4)
    with pytest.raises(TypeError, match="ToTensor"):
        transforms.RandomHorizontalFlip()(np.zeros((4, 4)))


def test_imagenet_train_pipeline_output():
    aug = transforms.Compose([
        transforms.RandomResizedCrop(size=16, interpolation=InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(p=0.5),
        rand_augment_transform(
            "rand-m9-mstd0.5-inc1",
            dict(translate_const=7, img_mean=tuple(round(255 * x) for x in IMAGENET_DEFAULT_MEAN),
                 interpolation=str_to_interp_mode("bicubic")),
        ),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
        RandomErasing(probability=0.25, mode="pixel", max_count=1, num_splits=0, device="cpu"),
    ])
    out = aug(_pil(20, 24))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    # Normalized [0, 1] pixels lie in [-mean/std, (1-mean)/std] (erased ones are N(0, 1)).
    assert -2.2 < out.median() < 2.7


# ---- seeding ---------------------------------------------------------------------------


def _train_aug():
    return transforms.Compose([
        transforms.RandomResizedCrop(8),
        transforms.RandomHorizontalFlip(),
        rand_augment_transform("rand-m9-mstd0.5-inc1", dict(translate_const=3)),
        transforms.ToTensor(),
        RandomErasing(probability=0.5, mode="pixel", device="cpu"),
    ])


def test_augmentation_rng_seeds_from_seed_index_and_epoch():
    aug, img = _train_aug(), _pil(12, 16)

    def run(index):
        torch.manual_seed(int(torch.randint(0, 1000, (1,))))  # the global state must not matter
        with augmentation_rng(index):
            return aug(img)

    first = [run(SampleIndex(i, epoch=0, seed=5)) for i in range(4)]
    assert all(torch.equal(run(SampleIndex(i, epoch=0, seed=5)), first[i]) for i in range(4))
    assert not any(torch.equal(first[0], other) for other in first[1:])
    assert not torch.equal(run(SampleIndex(0, epoch=1, seed=5)), first[0])
    assert not torch.equal(run(SampleIndex(0, epoch=0, seed=6)), first[0])
    # A plain int leaves the draws to torch's global generator (as outside the block).
    torch.manual_seed(3)
    with augmentation_rng(0):
        plain = aug(img)
    torch.manual_seed(3)
    assert torch.equal(aug(img), plain)


def test_sample_index_is_an_int_that_travels():
    index = SampleIndex(7, epoch=2, seed=9)
    assert index == 7 and [10, 11, 12, 13, 14, 15, 16, 17][index] == 17
    back = pickle.loads(pickle.dumps(index))
    assert (type(back), back, back.epoch, back.seed) == (SampleIndex, 7, 2, 9)
    inner = index - 5  # what ConcatDataset hands to its second part
    assert (inner, inner.epoch, inner.seed) == (2, 2, 9)
    batch = next(iter(CyclicSampler(range(5), 4, shuffle=True, seed=9, consumed_samples=3)))
    assert [i.epoch for i in batch] == [0, 0, 1, 1] and {i.seed for i in batch} == {9}


class AugmentedImages(Dataset):
    """10 PIL images; a sample is its augmented image and its index (to match samples)."""

    def __init__(self):
        self.images = [_pil(12, 16, seed=i) for i in range(10)]
        self.transform = _train_aug()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        with augmentation_rng(index):
            image = self.transform(self.images[index])
        return Instance(images=DistTensorData(image), labels=DistTensorData(torch.tensor(int(index)), placement_idx=-1))


def _batches(dataset, micro_batch_size, rank, dp_size, num_workers, steps, mixup=None):
    sampler = CyclicSampler(dataset, micro_batch_size, shuffle=True, data_parallel_rank=rank,
                            data_parallel_size=dp_size, seed=4)
    loader, _, _ = build_image_train_loader(dataset, micro_batch_size, sampler=sampler,
                                            num_workers=num_workers, seed=4, mixup_func=mixup)
    torch.manual_seed(100 + rank + num_workers)  # different global states per loader
    out = []
    for batch in itertools.islice(iter(loader), steps):
        images, labels = batch.images.tensor, batch.labels.tensor
        if loader.mixup_func is not None:  # what DefaultTrainer.get_batch does
            images, labels = loader.mixup_func(images, labels)
        out.append((images, labels))
    return out


def test_augmented_samples_do_not_depend_on_layout_or_workers():
    dataset = AugmentedImages()
    one = _batches(dataset, 4, 0, 1, 0, 4)  # 16 positions: epoch 0 and part of epoch 1
    ranks = [_batches(dataset, 2, rank, 2, 2, 4) for rank in range(2)]
    for step in range(4):
        images = torch.cat([ranks[0][step][0], ranks[1][step][0]])
        labels = torch.cat([ranks[0][step][1], ranks[1][step][1]])
        assert torch.equal(labels, one[step][1])
        assert torch.equal(images, one[step][0])
    # An index seen again in epoch 1 gets a different augmentation.
    seen = {}
    for images, labels in one:
        for image, label in zip(images, labels.tolist()):
            seen.setdefault(label, []).append(image)
    again = [views for views in seen.values() if len(views) == 2]
    assert again and all(not torch.equal(a, b) for a, b in again)


def test_concat_dataset_parts_stay_seeded():
    concat = ConcatDataset([AugmentedImages(), AugmentedImages()])
    with augmentation_rng(SampleIndex(3, 1, 4)):
        expected = AugmentedImages().transform(concat.datasets[1].images[3])
    assert torch.equal(concat[SampleIndex(13, 1, 4)].images.tensor, expected)


def test_mixup_in_loader_same_for_any_workers_and_dp_equals_accumulation():
    dataset = AugmentedImages()

    def mixup():
        return Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch", num_classes=10)

    main = _batches(dataset, 2, 0, 1, 0, 6, mixup())
    workers = _batches(dataset, 2, 0, 1, 2, 6, mixup())
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(main, workers))
    assert len({round(float(t.max()), 6) for _, t in main}) > 1  # lam varies over batches
    # dp 2 mixes each rank's micro-batch as one process mixes the same micro-batch
    # (micro-batch size 2, 2 accumulation steps).
    ranks = [_batches(dataset, 2, rank, 2, 0, 3, mixup()) for rank in range(2)]
    interleaved = [ranks[step % 2][step // 2] for step in range(6)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(main, interleaved))


# ---- Mixup -----------------------------------------------------------------------------


def _distinct_images(batch=4, size=8):
    # Image i is constant i + 1, so every pixel says which image it came from.
    return torch.arange(1.0, batch + 1).view(batch, 1, 1, 1).expand(batch, 3, size, size).clone()


def test_mixup_targets_sum_to_one_and_blend_images():
    images, labels = _distinct_images(), torch.tensor([0, 1, 2, 3])
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=5)
    torch.manual_seed(0)
    mixed, targets = mixup(images, labels)
    assert targets.shape == (4, 5) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(1), torch.ones(4))
    lam = float(targets[0, 0])
    assert 0 < lam < 1 and math.isclose(float(targets[0, 3]), 1 - lam, rel_tol=1e-6)
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0))
    assert torch.equal(images, _distinct_images())  # inputs are not modified
    smoothed = Mixup(mixup_alpha=0.8, label_smoothing=0.1, num_classes=5)(images, labels)[1]
    assert torch.allclose(smoothed.sum(1), torch.ones(4)) and float(smoothed.min()) >= 0.02 - 1e-7


def test_cutmix_box_area_matches_lambda():
    images, labels = _distinct_images(size=16), torch.tensor([0, 1, 2, 3])
    cutmix = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=4)
    torch.manual_seed(1)
    for _ in range(10):
        mixed, targets = cutmix(images, labels)
        lam = float(targets[0, 0])
        pasted = (mixed[0, 0] != 1).float().mean()  # pixels of image 0 that came from image 3
        assert math.isclose(float(pasted), 1 - lam, abs_tol=1e-6)
        assert math.isclose(float(targets[0, 3]), 1 - lam, abs_tol=1e-6)
    torch.manual_seed(2)
    (top, bottom, left, right), lam = cutmix_bbox_and_lam((16, 16), 0.7)
    assert math.isclose(lam, 1 - (bottom - top) * (right - left) / 256)
    (top, bottom, left, right), lam = cutmix_bbox_and_lam((16, 16), 0.7, ratio_minmax=(0.2, 0.5))
    assert 3 <= bottom - top < 8 and 3 <= right - left < 8


def test_mixup_prob_zero_and_errors():
    images, labels = _distinct_images(), torch.tensor([0, 1, 2, 3])
    same, targets = Mixup(prob=0.0, label_smoothing=0.0, num_classes=4)(images, labels)
    assert torch.equal(same, images) and torch.equal(targets, torch.eye(4))
    with pytest.raises(ValueError, match="mode='batch'"):
        Mixup(mode="elem")
    with pytest.raises(ValueError, match="even batch"):
        Mixup(num_classes=4)(images[:3], labels[:3])
    # seed_next_batch makes the next call reproducible whatever the global state.
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=4)
    results = []
    for state in (0, 1):
        torch.manual_seed(state)
        mixup.seed_next_batch(4, 12)
        results.append(mixup(images, labels))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_soft_target_cross_entropy_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    log_z = math.log(math.exp(1) + math.exp(2) + math.exp(3))
    first = -(0.2 * (1 - log_z) + 0.3 * (2 - log_z) + 0.5 * (3 - log_z))
    second = math.log(3)
    loss = SoftTargetCrossEntropy()(logits, targets)
    assert math.isclose(float(loss), (first + second) / 2, rel_tol=1e-6)
    # Class indices read as one-hot: the ordinary cross entropy.
    hard = SoftTargetCrossEntropy()(logits, torch.tensor([2, 0]))
    assert torch.allclose(hard, torch.nn.functional.cross_entropy(logits, torch.tensor([2, 0])))


# ---- RandAugment -----------------------------------------------------------------------


def test_rand_augment_parses_its_string():
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == dict(
        magnitude=9, num_layers=2, magnitude_std=0.5, magnitude_max=None, increasing=True, weight_idx=None
    )
    assert parse_rand_augment("rand-n3-m5-inc0-mstd101")["magnitude_std"] == float("inf")
    ra = rand_augment_transform("rand-m9-mstd0.5-inc1", dict(translate_const=100, img_mean=(124, 116, 104)))
    assert [op.name for op in ra.ops] == RAND_INCREASING_TRANSFORMS and ra.num_layers == 2
    assert all(op.magnitude == 9 and op.magnitude_std == 0.5 and op.prob == 0.5 for op in ra.ops)
    plain = rand_augment_transform("rand-n3-m5", {})
    assert [op.name for op in plain.ops] == RAND_TRANSFORMS and plain.num_layers == 3
    for bad in ("auto-m9", "rand-x9", "rand-m9.5.5", "rand-w1"):
        with pytest.raises(ValueError):
            rand_augment_transform(bad, {})


class _Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, img):
        self.calls += 1
        return img


def test_rand_augment_applies_n_ops():
    ops = [_Counting() for _ in range(5)]
    ra = RandAugment(ops, num_layers=3)
    torch.manual_seed(0)
    for _ in range(20):
        ra(_pil(4, 4))
    assert sum(op.calls for op in ops) == 60 and all(op.calls > 0 for op in ops)
    with pytest.raises(TypeError, match="before ToTensor"):
        ra(torch.zeros(3, 4, 4))


def test_each_rand_augment_op_on_pil():
    img = _pil(8, 10)
    hparams = dict(translate_const=3, img_mean=(124, 116, 104), interpolation="bicubic")
    for name in set(RAND_TRANSFORMS + RAND_INCREASING_TRANSFORMS):
        out = AugmentOp(name, prob=1.0, magnitude=9, hparams=hparams)(img)
        assert out.size == img.size and out.mode == img.mode, name
    pixels = np.asarray(img).astype(int)
    assert np.array_equal(np.asarray(AugmentOp("Invert", prob=1.0)(img)), 255 - pixels)
    assert np.array_equal(np.asarray(AugmentOp("Posterize", prob=1.0, magnitude=10)(img)), pixels & 0xF0)
    assert AugmentOp("Invert", prob=0.0)(img) is img


# ---- RandomErasing ---------------------------------------------------------------------


def test_random_erasing_probability_modes_and_batches():
    ones = torch.ones(3, 16, 16)
    torch.manual_seed(0)
    erase = RandomErasing(probability=0.25, mode="const", device="cpu")
    erased = sum(bool((erase(ones) == 0).any()) for _ in range(400))
    assert 70 <= erased <= 130  # 100 expected
    assert torch.equal(ones, torch.ones(3, 16, 16))  # the input is not modified
    assert all(torch.equal(RandomErasing(probability=0.0)(ones), ones) for _ in range(20))
    out = RandomErasing(probability=1.0, mode="const", min_area=0.1, max_area=0.1)(ones)
    assert out.shape == ones.shape and 0 < float((out == 0).float().mean()) < 0.2
    noisy = RandomErasing(probability=1.0, mode="pixel", min_area=0.2, max_area=0.3)(ones)
    changed = noisy != 1
    assert changed.any() and torch.unique(noisy[changed]).numel() > 10  # per-pixel noise
    colour = RandomErasing(probability=1.0, mode="rand", min_area=0.2, max_area=0.3)(ones)
    assert all(torch.unique(colour[c][colour[c] != 1]).numel() == 1 for c in range(3))  # one colour per channel
    batch = RandomErasing(probability=1.0, num_splits=2, max_count=2)(torch.ones(4, 3, 16, 16))
    assert torch.equal(batch[:2], torch.ones(2, 3, 16, 16)) and (batch[2:] == 0).any()
    with pytest.raises(ValueError, match="mode"):
        RandomErasing(mode="blur")
