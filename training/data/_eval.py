"""Image loading and the evaluation / feature-extraction transform (docs/architecture.md Contract 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from vireid.training.data._recipes import IMAGENET_MEAN, IMAGENET_STD
from vireid.training.data._transforms import INTERPOLATIONS


class ImageLoadError(ValueError):
    """An image file exists but cannot be decoded (truncated, corrupt or not an image)."""


def load_image(path: str | Path) -> Image.Image:
    """Open ``path`` as a fully decoded 3-channel RGB PIL image (grey and palette images are converted).

    Raises:
        FileNotFoundError: The file does not exist.
        ImageLoadError: The file cannot be decoded (a ``ValueError``).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"image not found: {file}")
    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"cannot decode image {file}: {exc}") from exc


class EvalTransform:
    """PIL RGB -> resize (Pillow) -> float32 / 255 -> ``(x - mean) / std`` -> (3, H, W) float32 tensor."""

    def __init__(
        self,
        *,
        height: int,
        width: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {mean}, {std}")
        self.size = (int(height), int(width))
        self.interpolation = interpolation
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, image: Image.Image) -> Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"eval transform takes a PIL image, got {type(image).__name__}")
        resized = image.convert("RGB").resize(
            (self.size[1], self.size[0]), INTERPOLATIONS[self.interpolation]
        )
        array = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
        array = (array - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, interpolation={self.interpolation!r})"


def eval_transform(
    *,
    height: int,
    width: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
) -> EvalTransform:
    """The Contract 2 transform: ``transform(pil_image) -> (3, height, width) float32`` tensor.

    Steps: ``image.convert("RGB")`` -> Pillow ``resize((width, height), interpolation)`` -> float32 / 255
    -> ``(x - mean) / std`` per channel (float32) -> CHW. Serving repeats it in NumPy
    (``vireid.serving.runtime``).

    Raises:
        ValueError: Unknown interpolation, non-positive size, or bad mean/std.
    """
    return EvalTransform(height=height, width=width, mean=mean, std=std, interpolation=interpolation)
