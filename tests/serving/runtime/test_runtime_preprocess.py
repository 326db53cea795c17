"""NumPy preprocessing (serving/runtime/_preprocess.py) against hand-computed values and the torch path."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vireid.serving.runtime import InputSpec, preprocess, preprocess_batch, to_rgb_image

MEAN = (0.5, 0.25, 0.125)
STD = (0.5, 0.25, 0.5)


def _spec(height: int, width: int, interpolation: str = "bilinear") -> InputSpec:
    return InputSpec(height=height, width=width, mean=MEAN, std=STD, interpolation=interpolation)


def test_hand_computed_2x2_without_resize() -> None:
    pixels = np.array([[[255, 0, 51], [0, 255, 102]], [[51, 102, 255], [255, 255, 255]]], dtype=np.uint8)
    out = preprocess(Image.fromarray(pixels, "RGB"), _spec(2, 2))
    assert out.shape == (3, 2, 2) and out.dtype == np.float32
    # red channel: (v/255 - 0.5) / 0.5
    np.testing.assert_allclose(out[0], [[1.0, -1.0], [-0.6, 1.0]], atol=1e-6)
    # green channel: (v/255 - 0.25) / 0.25
    np.testing.assert_allclose(out[1], [[-1.0, 3.0], [0.6, 3.0]], atol=1e-6)
    # blue channel: (v/255 - 0.125) / 0.5
    np.testing.assert_allclose(out[2], [[0.15, 0.55], [1.75, 1.75]], atol=1e-6)


def test_nearest_resize_picks_hand_computed_pixels() -> None:
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10  # 4x4 grey ramp
    out = preprocess(grey, _spec(2, 2, "nearest"))  # 2-D array = grey → RGB
    # Pillow nearest, scale 2: source index floor((i + 0.5) * 2) = 1, 3
    expected = (np.array([[50, 70], [130, 150]], dtype=np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(out[0], expected, atol=1e-6)
    np.testing.assert_allclose(out[1], (expected * 0.5 + 0.5 - 0.25) / 0.25, atol=1e-5)


def test_constant_image_any_interpolation() -> None:
    for interp in ("nearest", "bilinear", "bicubic"):
        img = Image.new("RGB", (7, 13), (128, 64, 32))
        out = preprocess(img, _spec(6, 3, interp))
        assert out.shape == (3, 6, 3)
        for c, v in enumerate((128, 64, 32)):
            np.testing.assert_allclose(out[c], (v / 255 - MEAN[c]) / STD[c], atol=1e-6)


def test_modes_and_arrays_convert_to_rgb() -> None:
    rgba = np.zeros((4, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    assert to_rgb_image(rgba).mode == "RGB"
    assert to_rgb_image(Image.new("L", (3, 3))).mode == "RGB"
    batch = preprocess_batch([Image.new("P", (5, 5)), rgba[..., :3]], _spec(4, 2))
    assert batch.shape == (2, 3, 4, 2)
    assert preprocess_batch([], _spec(4, 2)).shape == (0, 3, 4, 2)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), ValueError),
        (np.zeros((4, 4, 2), dtype=np.uint8), ValueError),
        (np.zeros((0, 4, 3), dtype=np.uint8), ValueError),
        ("image.jpg", TypeError),
    ],
)
def test_bad_inputs(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        preprocess(bad, _spec(4, 2))  # type: ignore[arg-type]


def _training_eval_transform(spec: InputSpec):  # type: ignore[no-untyped-def]
    """The training-side transform (Contract 2), called with whatever keyword names it uses."""
    data = pytest.importorskip("vireid.training.data", reason="vireid.training.data not available")
    if not hasattr(data, "eval_transform"):
        pytest.skip("vireid.training.data.eval_transform is not written yet (Contract 2 parity untested)")
    params = inspect.signature(data.eval_transform).parameters
    values = {
        "height": spec.height,
        "width": spec.width,
        "size": (spec.height, spec.width),
        "input_size": (3, spec.height, spec.width),
        "mean": spec.mean,
        "std": spec.std,
        "interpolation": spec.interpolation,
    }
    return data.eval_transform(**{k: v for k, v in values.items() if k in params})


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_parity_with_training_eval_transform(tmp_path: Path, interpolation: str) -> None:
    pytest.importorskip("torch")
    spec = InputSpec(
        height=288,
        width=144,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        interpolation=interpolation,
    )
    transform = _training_eval_transform(spec)
    rng = np.random.default_rng(0)
    for i, size in enumerate([(100, 50), (300, 160), (288, 144)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        with Image.open(path) as img:
            ours = preprocess(img, spec)
        with Image.open(path) as img:
            theirs = transform(img.convert("RGB"))
        theirs = np.asarray(theirs.numpy() if hasattr(theirs, "numpy") else theirs, dtype=np.float32)
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
