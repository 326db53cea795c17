from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vireid.training.data import (
    ChannelAdapGray,
    ChannelExchange,
    ChannelRandomErasing,
    ColorJitter,
    Normalize,
    Pad,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
)

FILL = torch.tensor([0.4914, 0.4822, 0.4465])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_channels(height: int = 6, width: int = 4) -> torch.Tensor:
    """(3, H, W) tensor whose channels hold the constants 1, 2 and 3."""
    return torch.stack([torch.full((height, width), float(c)) for c in (1, 2, 3)])


def test_channel_exchange_replicates_one_channel_uniformly() -> None:
    op, g, x = ChannelExchange(gray=2), _gen(), _distinct_channels()
    seen = []
    for _ in range(600):
        out = op(x, g)
        assert out.shape == x.shape
        values = out[:, 0, 0].tolist()
        assert values[0] == values[1] == values[2]
        seen.append(values[0])
    counts = np.bincount(np.array(seen, dtype=int), minlength=4)[1:]
    assert counts.min() > 150  # each channel about 200 times; gray (value 1.8...) never appears


def test_adap_gray_proportions() -> None:
    op, g, x = ChannelAdapGray(p=0.5), _gen(1), _distinct_channels()
    gray = 0.2989 * 1 + 0.587 * 2 + 0.114 * 3
    kinds = {"single": 0, "gray": 0, "same": 0}
    draws = 4000
    for _ in range(draws):
        out = op(x, g)
        if torch.equal(out, x):
            kinds["same"] += 1
        elif torch.allclose(out, torch.full_like(x, gray)):
            kinds["gray"] += 1
        else:
            assert out[0, 0, 0] == out[1, 0, 0] == out[2, 0, 0] and float(out[0, 0, 0]) in (1.0, 2.0, 3.0)
            kinds["single"] += 1
    assert abs(kinds["single"] / draws - 0.75) < 0.03
    assert abs(kinds["gray"] / draws - 0.125) < 0.02
    assert abs(kinds["same"] / draws - 0.125) < 0.02


def test_random_erasing_fill_and_area() -> None:
    height, width = 40, 20
    op, g = ChannelRandomErasing(p=1.0), _gen(2)
    x = torch.full((3, height, width), -5.0)
    for _ in range(200):
        out = op(x, g)
        erased = (out != -5.0).all(dim=0)
        area = int(erased.sum())
        assert area > 0
        rows, cols = torch.nonzero(erased, as_tuple=True)
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert h * w == area and h < height and w < width  # one solid box strictly inside
        # the box comes from rounding sqrt(area·aspect): allow the rounding slack around [0.02, 0.4]·H·W
        assert 0.02 * height * width - (h + w + 1) <= area <= 0.4 * height * width + (h + w + 1)
        assert torch.allclose(out[:, rows[0], cols[0]], FILL)
    assert torch.equal(ChannelRandomErasing(p=0.0)(x, g), x)


def test_random_erasing_probability() -> None:
    op, g, x = ChannelRandomErasing(p=0.5), _gen(3), torch.zeros(3, 30, 15)
    erased = sum(not torch.equal(op(x, g), x) for _ in range(1000))
    assert 430 < erased < 570


def test_geometric_steps_on_pil() -> None:
    g = _gen(4)
    image = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3))
    assert Resize(12, 8)(image, g).size == (8, 12)
    padded = Pad(2)(image, g)
    assert padded.size == (8, 10) and np.asarray(padded)[0].max() == 0
    crops = {np.asarray(RandomCrop(6, 4)(padded, g)).tobytes() for _ in range(200)}
    assert len(crops) == 25  # every offset in 0..4 x 0..4 is reachable
    flips = [RandomHorizontalFlip(0.5)(image, g) for _ in range(400)]
    mirrored = sum(np.array_equal(np.asarray(f), np.asarray(image)[:, ::-1]) for f in flips)
    assert 150 < mirrored < 250
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(20, 20)(image, g)


def test_to_tensor_and_normalize() -> None:
    image = Image.fromarray(np.full((2, 2, 3), 255, dtype=np.uint8))
    x = ToTensor()(image, _gen())
    assert x.dtype == torch.float32 and x.shape == (3, 2, 2) and float(x.max()) == 1.0
    y = Normalize((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))(x, _gen())
    assert y[:, 0, 0].tolist() == [2.0, 1.0, 0.5]
    with pytest.raises(TypeError, match="PIL"):
        ToTensor()(x, _gen())


def test_color_jitter_single_operations() -> None:
    x = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1).expand(3, 2, 2).clone()
    g = _gen(5)
    bright = ColorJitter(brightness=0.5)(x, g)
    factor = float(bright[0, 0, 0] / x[0, 0, 0])
    assert 0.5 <= factor <= 1.5 and torch.allclose(bright, (x * factor).clamp(0, 1))
    gray = 0.2989 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    sat = ColorJitter(saturation=0.5)(x, g)
    s = float((sat[0, 0, 0] - gray) / (0.2 - gray))
    assert 0.5 <= s <= 1.5 and torch.allclose(sat, (s * x + (1 - s) * gray).clamp(0, 1), atol=1e-6)
    contrast = ColorJitter(contrast=0.5)(x, g)  # uniform image: mean luma == per-pixel luma
    c = float((contrast[0, 0, 0] - gray) / (0.2 - gray))
    assert 0.5 <= c <= 1.5
    hued = ColorJitter(hue=0.5)(x, g)
    # a hue rotation keeps value (max) and saturation ((max - min) / max)
    assert math.isclose(float(hued.max()), 0.6, abs_tol=1e-5)
    assert math.isclose(float(hued[:, 0, 0].min()), 0.2, abs_tol=1e-5)


def test_color_jitter_on_pil_is_reproducible() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 4, 3), dtype=np.uint8))
    op = ColorJitter(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5)
    first, second = op(image, _gen(9)), op(image, _gen(9))
    assert isinstance(first, Image.Image)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert not np.array_equal(np.asarray(first), np.asarray(op(image, _gen(10))))


def test_hue_shift_of_zero_is_identity() -> None:
    x = torch.rand(3, 5, 5, generator=_gen(11))
    assert torch.allclose(ColorJitter(hue=1e-9)(x, _gen(12)), x, atol=1e-5)
