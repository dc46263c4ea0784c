"""libai.data.transforms, checked against hand-computed values."""
import numpy as np
import pytest
import torch
from PIL import Image

from libai.data import transforms as T


def test_to_tensor_gray_and_color():
    gray = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    out = T.ToTensor()(gray)
    assert out.dtype == torch.float32 and out.shape == (1, 2, 2)
    assert torch.allclose(out, torch.tensor([[[0.0, 1.0], [0.2, 0.4]]]))
    color = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = T.ToTensor()(color)
    assert out.shape == (3, 2, 2)
    for c in range(3):
        assert torch.allclose(out[c], torch.from_numpy(color[:, :, c].astype(np.float32) / 255))
    pil = Image.fromarray(gray)
    assert torch.equal(T.ToTensor()(pil), T.ToTensor()(gray))
    # Non-uint8 keeps its values.
    assert T.ToTensor()(np.full((2, 2), 3.5)).tolist() == [[[3.5, 3.5], [3.5, 3.5]]]


def test_to_tensor_does_not_share_memory_and_rejects_tensors():
    gray = np.zeros((2, 2), dtype=np.uint8)
    gray.setflags(write=False)
    out = T.ToTensor()(gray)
    out += 1
    assert gray.sum() == 0
    with pytest.raises(TypeError, match="drop ToTensor"):
        T.ToTensor()(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="HxW or HxWxC"):
        T.ToTensor()(np.zeros(3, dtype=np.uint8))


def test_normalize():
    img = torch.stack([torch.full((2, 2), 0.5), torch.full((2, 2), 1.0)])
    out = T.Normalize(mean=[0.5, 0.25], std=[0.5, 0.25])(img)
    assert torch.allclose(out[0], torch.zeros(2, 2)) and torch.allclose(out[1], torch.full((2, 2), 3.0))
    assert torch.equal(img[1], torch.ones(2, 2))  # not in place by default
    # One value for all channels, and a batch of images.
    out = T.Normalize(mean=[0.1307], std=[0.3081])(torch.full((4, 1, 3, 3), 0.1307 + 0.3081))
    assert torch.allclose(out, torch.ones(4, 1, 3, 3))
    with pytest.raises(ValueError, match="zero entry"):
        T.Normalize([0.0], [0.0])
    with pytest.raises(ValueError, match="one value per channel"):
        T.Normalize([0.1, 0.2], [1.0, 1.0])(torch.zeros(3, 2, 2))
    with pytest.raises(TypeError, match="float tensor"):
        T.Normalize([0.1], [1.0])(torch.zeros(1, 2, 2, dtype=torch.uint8))


def test_random_crop_windows_and_padding():
    img = torch.arange(16.0).view(1, 4, 4)
    seen = set()
    torch.manual_seed(0)
    for _ in range(200):
        out = T.RandomCrop(2)(img)
        assert out.shape == (1, 2, 2)
        i, j = divmod(int(out[0, 0, 0]), 4)
        assert torch.equal(out, img[:, i : i + 2, j : j + 2])
        seen.add((i, j))
    assert seen == {(i, j) for i in range(3) for j in range(3)}
    padded = T.RandomCrop(4, padding=1)(torch.ones(1, 2, 2))
    expected = torch.zeros(1, 4, 4)
    expected[:, 1:3, 1:3] = 1
    assert torch.equal(padded, expected)
    grown = T.RandomCrop((3, 2), pad_if_needed=True, fill=7)(torch.ones(1, 2, 2))
    assert grown.flatten().tolist() == [1, 1, 1, 1, 7, 7]
    with pytest.raises(ValueError, match="larger than the"):
        T.RandomCrop(5)(img)


def test_random_horizontal_flip():
    img = torch.arange(6.0).view(1, 2, 3)
    assert T.RandomHorizontalFlip(p=1.0)(img).tolist() == [[[2, 1, 0], [5, 4, 3]]]
    assert torch.equal(T.RandomHorizontalFlip(p=0.0)(img), img)
    torch.manual_seed(0)
    flips = sum(not torch.equal(T.RandomHorizontalFlip(0.5)(img), img) for _ in range(400))
    assert 160 < flips < 240
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        T.RandomHorizontalFlip(1.5)


def test_resize_bilinear_values():
    img = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    out = T.Resize((4, 4))(img)
    # align_corners=False: output pixel k samples source (k + 0.5) / 2 - 0.5, clamped to [0, 1].
    w = torch.tensor([0.0, 0.25, 0.75, 1.0])
    assert torch.allclose(out[0], 2 * w[:, None] + w[None, :])
    # Halving averages 2x2 blocks; an int size sets the shorter side and keeps the aspect ratio.
    big = torch.arange(32.0).view(1, 4, 8)
    half = T.Resize(2)(big)
    assert half.shape == (1, 2, 4)
    assert torch.allclose(half[0, 0], torch.tensor([4.5, 6.5, 8.5, 10.5]))
    # Integer images are rounded back to their dtype; a 2-D image stays 2-D.
    out = T.Resize((4, 4))(torch.tensor([[0, 10], [20, 30]], dtype=torch.uint8))
    assert out.dtype == torch.uint8 and out.shape == (4, 4)
    assert out[0].tolist() == [0, 2, 8, 10]
    assert torch.equal(T.Resize((2, 2))(img), img)


def test_center_crop():
    img = torch.arange(24.0).view(1, 4, 6)
    assert torch.equal(T.CenterCrop(2)(img), img[:, 1:3, 2:4])
    assert torch.equal(T.CenterCrop((4, 6))(img), img)
    padded = T.CenterCrop(4)(torch.ones(1, 2, 2))
    assert padded.sum() == 4 and torch.equal(padded[:, 1:3, 1:3], torch.ones(1, 2, 2))
    with pytest.raises(TypeError, match="ToTensor"):
        T.CenterCrop(2)(np.zeros((4, 4)))


def test_compose_applies_in_order():
    pipeline = T.Compose([T.ToTensor(), T.Normalize([0.5], [0.5]), T.CenterCrop(1)])
    out = pipeline(np.array([[0, 255, 0], [255, 255, 255], [0, 0, 0]], dtype=np.uint8))
    assert out.tolist() == [[[1.0]]]
    assert "Normalize" in repr(pipeline)
