"""NumPy implementation of the evaluation preprocessing (architecture.md Contract 2, methods.md §0.2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image

from vireid.serving.runtime._manifest import InputSpec

__all__ = ["ImageInput", "preprocess", "preprocess_batch", "to_rgb_image"]

ImageInput = Union[Image.Image, np.ndarray]  # noqa: UP007 - runtime alias also used by Python 3.10 callers

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def to_rgb_image(image: ImageInput) -> Image.Image:
    """Turn a decoded image into an RGB ``PIL.Image``.

    Args:
        image: A ``PIL.Image`` in any mode, or a uint8 array shaped (H, W) (grey), (H, W, 3) (RGB) or
            (H, W, 4) (RGBA).

    Returns:
        The image in mode ``"RGB"``.

    Raises:
        TypeError: for anything that is neither a PIL image nor a NumPy array.
        ValueError: for an array with another dtype or shape, or an empty image.
    """
    if isinstance(image, Image.Image):
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 (H, W[, 3|4]), got dtype {image.dtype}")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            rgb = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
        else:
            raise ValueError(f"image arrays must be shaped (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    else:
        raise TypeError(f"expected a PIL.Image.Image or numpy.ndarray, got {type(image).__name__}")
    if rgb.width == 0 or rgb.height == 0:
        raise ValueError(f"empty image of size {rgb.size}")
    return rgb


def preprocess(image: ImageInput, spec: InputSpec) -> np.ndarray:
    """Preprocess one image exactly like the training evaluation transform (Contract 2).

    ``convert("RGB")`` → Pillow ``resize((W, H), interpolation)`` → float32 / 255 → ``(x - mean) / std``
    → CHW.

    Args:
        image: See :func:`to_rgb_image`.
        spec: Input size, mean/std and interpolation from the manifest.

    Returns:
        (3, H, W) float32 array.
    """
    rgb = to_rgb_image(image)
    if rgb.size != (spec.width, spec.height):
        rgb = rgb.resize((spec.width, spec.height), resample=_RESAMPLE[spec.interpolation])
    scaled = np.asarray(rgb, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    normed = (scaled - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(normed.transpose(2, 0, 1), dtype=np.float32)


def preprocess_batch(images: Sequence[ImageInput], spec: InputSpec) -> np.ndarray:
    """Preprocess a list of images into one batch.

    Args:
        images: N images, see :func:`to_rgb_image`.
        spec: Input size, mean/std and interpolation from the manifest.

    Returns:
        (N, 3, H, W) float32 array (N may be 0).
    """
    out = np.empty((len(images), 3, spec.height, spec.width), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = preprocess(image, spec)
    return out
