from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vireid.training.data import ImageLoadError, eval_transform, load_image


def test_values_on_a_2x2_image() -> None:
    pixels = np.array([[[0, 51, 102], [255, 255, 255]], [[10, 20, 30], [200, 100, 0]]], dtype=np.uint8)
    transform = eval_transform(
        height=2, width=2, mean=(0.5, 0.4, 0.3), std=(0.5, 0.25, 0.1), interpolation="bilinear"
    )
    out = transform(Image.fromarray(pixels))
    assert out.shape == (3, 2, 2) and out.dtype == torch.float32
    expected = (pixels.astype(np.float32) / 255 - np.array([0.5, 0.4, 0.3], np.float32)) / np.array(
        [0.5, 0.25, 0.1], np.float32
    )
    assert np.allclose(out.numpy(), expected.transpose(2, 0, 1), atol=1e-6)
    assert out[0, 0, 0].item() == pytest.approx(-1.0) and out[1, 0, 0].item() == pytest.approx(-0.8)


def test_resize_uses_pillow_and_grey_becomes_rgb() -> None:
    grey = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3, mode="L")
    out = eval_transform(height=4, width=2, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bicubic")(grey)
    reference = np.asarray(grey.convert("RGB").resize((2, 4), Image.Resampling.BICUBIC), np.float32) / 255
    assert out.shape == (3, 4, 2) and np.allclose(out.numpy(), reference.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="interpolation"):
        eval_transform(height=4, width=2, interpolation="lanczos3")


def test_load_image(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(np.zeros((3, 2), np.uint8), mode="L").save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (2, 3)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageLoadError, match=r"corrupt\.jpg"):
        load_image(corrupt)
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    with pytest.raises(ValueError):
        load_image(truncated)
