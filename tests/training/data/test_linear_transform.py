from __future__ import annotations

import torch

from vireid.training.data import LinearTransform, linear_transform


def _image(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 + 0.9 * torch.rand(3, 48, 24, generator=g)


def test_stops_once_some_multiplier_reaches_threshold() -> None:
    for seed in range(20):
        x = _image(seed)
        out, multiplier = linear_transform(x, generator=torch.Generator().manual_seed(seed))
        assert float(multiplier.min()) <= 1e-6
        assert torch.allclose(out, x * multiplier, rtol=1e-4, atol=1e-12)
        assert float(out.max()) <= 1.0 + 1e-6  # each box is rescaled so its max is a Beta(0.5, 0.5) draw


def test_cap_bounds_the_loop_and_threshold_controls_it() -> None:
    x = _image(0)
    generator = torch.Generator().manual_seed(0)
    _, multiplier = linear_transform(x, generator=generator, threshold=0.0, max_boxes=3)
    assert float(multiplier.min()) > 0.0  # never reached: stopped by the cap
    assert (multiplier != 1).any()
    _, loose = linear_transform(x, generator=torch.Generator().manual_seed(0), threshold=0.999)
    assert float(loose.min()) <= 0.999


def test_zero_channel_is_left_alone() -> None:
    x = _image(1)
    x[1] = 0
    out, multiplier = linear_transform(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[1], x[1]) and torch.equal(multiplier[1], torch.ones_like(x[1]))


def test_probability_and_determinism() -> None:
    op, x = LinearTransform(p=0.5), _image(2)
    g = torch.Generator().manual_seed(3)
    changed = sum(not torch.equal(op(x, g), x) for _ in range(200))
    assert 70 < changed < 130
    a = LinearTransform(p=1.0)(x, torch.Generator().manual_seed(4))
    b = LinearTransform(p=1.0)(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
