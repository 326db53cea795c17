"""Training augmentations (methods.md §0.2, §A.2) in plain PyTorch + Pillow.

Every transform is a callable ``t(x, generator)`` where ``x`` is a PIL RGB image or a (3, H, W) float32
tensor and ``generator`` a ``torch.Generator`` that supplies every random draw, so a pipeline is
reproducible from a seed. Geometric steps run on PIL images as in torchvision; the channel augmentations
run on normalised tensors.

No augmentation library is used (kornia was dropped from the ``train`` extra): the recipes reproduce the
official per-image torchvision / Pillow pipelines (PIL resampling, one draw sequence per image from a
passed generator, so a DataLoader worker's stream is reproducible). kornia's batched tensor augmentations
resample differently and draw from the global RNG, so they would change both the pixels and the draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

ImageLike = Image.Image | Tensor

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
ERASING_FILL = (0.4914, 0.4822, 0.4465)  # CIFAR means written into normalised space, as the reference (§0.2)
_MAX_ERASING_ATTEMPTS = 100


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` (both inclusive, like ``random.randint``)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _require_tensor(x: ImageLike, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[0] != 3:
        raise TypeError(f"{name} needs a (3, H, W) tensor, got {type(x).__name__} {getattr(x, 'shape', '')}")
    return x


def _require_image(x: ImageLike, name: str) -> Image.Image:
    if not isinstance(x, Image.Image):
        raise TypeError(f"{name} needs a PIL image (put it before ToTensor), got {type(x).__name__}")
    return x


def _box_size(
    generator: torch.Generator, *, area: int, scale: tuple[float, float], ratio: float
) -> tuple[int, int]:
    """Draw a box of area ``U(scale)·area`` and aspect ``U(ratio, 1/ratio)``; returns (h, w)."""
    target = _uniform(generator, *scale) * area
    aspect = _uniform(generator, ratio, 1.0 / ratio)
    return round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))


class Resize:
    """Resize a PIL image to ``(height, width)`` with Pillow's ``interpolation``."""

    def __init__(self, height: int, width: int, *, interpolation: str = "bilinear") -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        self.size = (int(height), int(width))
        self.resample = INTERPOLATIONS[interpolation]

    def __call__(self, x: ImageLike, generator: torch.Generator) -> Image.Image:
        image = _require_image(x, "Resize")
        return image.resize((self.size[1], self.size[0]), self.resample)


class Pad:
    """Pad every border by ``padding`` pixels with ``fill`` (PIL: 0-255 value; tensor: raw value)."""

    def __init__(self, padding: int, *, fill: int = 0) -> None:
        self.padding, self.fill = int(padding), fill

    def __call__(self, x: ImageLike, generator: torch.Generator) -> ImageLike:
        if isinstance(x, Image.Image):
            return ImageOps.expand(x, border=self.padding, fill=(self.fill,) * len(x.getbands()))
        p = self.padding
        return torch.nn.functional.pad(_require_tensor(x, "Pad"), (p, p, p, p), value=float(self.fill))


class RandomCrop:
    """Crop a random ``(height, width)`` window (top-left offsets uniform, inclusive)."""

    def __init__(self, height: int, width: int) -> None:
        self.size = (int(height), int(width))

    def __call__(self, x: ImageLike, generator: torch.Generator) -> ImageLike:
        h, w = self.size
        full_h, full_w = (x.height, x.width) if isinstance(x, Image.Image) else x.shape[-2:]
        if full_h < h or full_w < w:
            raise ValueError(f"RandomCrop {self.size} is larger than the input ({full_h}, {full_w})")
        top, left = _randint(generator, 0, full_h - h), _randint(generator, 0, full_w - w)
        if isinstance(x, Image.Image):
            return x.crop((left, top, left + w, top + h))
        return x[:, top : top + h, left : left + w]


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: ImageLike, generator: torch.Generator) -> ImageLike:
        if float(torch.rand((), generator=generator)) >= self.p:
            return x
        if isinstance(x, Image.Image):
            return x.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return x.flip(-1)


class ToTensor:
    """PIL RGB image -> (3, H, W) float32 tensor in [0, 1]."""

    def __call__(self, x: ImageLike, generator: torch.Generator) -> Tensor:
        image = _require_image(x, "ToTensor").convert("RGB")
        return pil_to_tensor(image)


def pil_to_tensor(image: Image.Image) -> Tensor:
    """(H, W, 3) uint8 PIL image -> (3, H, W) float32 tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def tensor_to_pil(x: Tensor) -> Image.Image:
    """(3, H, W) float tensor in [0, 1] -> PIL RGB image (rounded to uint8)."""
    array = (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array, mode="RGB")


class Normalize:
    """``(x - mean) / std`` per channel on a (3, H, W) tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {mean}, {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, x: ImageLike, generator: torch.Generator) -> Tensor:
        return (_require_tensor(x, "Normalize") - self.mean) / self.std


def grayscale(x: Tensor) -> Tensor:
    """(3, H, W) -> (1, H, W) luma with weights 0.2989, 0.587, 0.114."""
    r, g, b = x[0], x[1], x[2]
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(0)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x[0], x[1], x[2]
    maxc, _ = x.max(dim=0)
    minc, _ = x.min(dim=0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue)) % 1.0
    sat = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return torch.stack([hue, sat, maxc])


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x[0], x[1], x[2]
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6])
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


class ColorJitter:
    """torchvision ``ColorJitter`` semantics on float RGB (§0.2 uses 0.5 for all four strengths).

    Factors: brightness/contrast/saturation ``U(max(0, 1 - v), 1 + v)``, hue shift ``U(-h, h)`` turns; the
    four operations run in a random order. Brightness scales, contrast blends with the mean luma,
    saturation blends with the luma image, hue rotates in HSV; results are clamped to [0, 1] after each.
    PIL inputs are converted to float, jittered and rounded back to a PIL image (torchvision rounds after
    every operation on PIL images, so values can differ by a grey level or two).
    """

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, *, saturation: float = 0.0, hue: float = 0.0
    ) -> None:
        if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
            raise ValueError("jitter strengths must be >= 0 and hue <= 0.5")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, x: ImageLike, generator: torch.Generator) -> ImageLike:
        tensor = (
            pil_to_tensor(x.convert("RGB"))
            if isinstance(x, Image.Image)
            else _require_tensor(x, "ColorJitter")
        )
        order = torch.randperm(4, generator=generator).tolist()
        b = _uniform(generator, max(0.0, 1 - self.brightness), 1 + self.brightness)
        c = _uniform(generator, max(0.0, 1 - self.contrast), 1 + self.contrast)
        s = _uniform(generator, max(0.0, 1 - self.saturation), 1 + self.saturation)
        h = _uniform(generator, -self.hue, self.hue)
        for op in order:
            if op == 0 and self.brightness > 0:
                tensor = (tensor * b).clamp(0, 1)
            elif op == 1 and self.contrast > 0:
                tensor = (c * tensor + (1 - c) * grayscale(tensor).mean()).clamp(0, 1)
            elif op == 2 and self.saturation > 0:
                tensor = (s * tensor + (1 - s) * grayscale(tensor)).clamp(0, 1)
            elif op == 3 and self.hue > 0:
                hsv = _rgb_to_hsv(tensor)
                hsv[0] = (hsv[0] + h) % 1.0
                tensor = _hsv_to_rgb(hsv).clamp(0, 1)
        return tensor_to_pil(tensor) if isinstance(x, Image.Image) else tensor


class ChannelRandomErasing:
    """With probability ``p``, fill one random box with per-channel constants (§0.2).

    Up to 100 attempts to draw a box of area ``U(sl, sh)·H·W`` and aspect ``U(r1, 1/r1)`` that fits strictly
    inside the image (``h < H`` and ``w < W``); the first that fits is filled with ``fill`` (in the tensor's
    own, normalised, space) and the image returned.
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        sl: float = 0.02,
        sh: float = 0.4,
        r1: float = 0.3,
        fill: Sequence[float] = ERASING_FILL,
    ) -> None:
        if not (0 < sl <= sh and 0 < r1 <= 1):
            raise ValueError(f"need 0 < sl <= sh and 0 < r1 <= 1, got sl={sl}, sh={sh}, r1={r1}")
        self.p, self.scale, self.r1 = p, (sl, sh), r1
        self.fill = torch.tensor(fill, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, x: ImageLike, generator: torch.Generator) -> Tensor:
        tensor = _require_tensor(x, "ChannelRandomErasing")
        if float(torch.rand((), generator=generator)) >= self.p:
            return tensor
        height, width = tensor.shape[-2:]
        for _ in range(_MAX_ERASING_ATTEMPTS):
            h, w = _box_size(generator, area=height * width, scale=self.scale, ratio=self.r1)
            if h < height and w < width:
                top, left = _randint(generator, 0, height - h), _randint(generator, 0, width - w)
                out = tensor.clone()
                out[:, top : top + h, left : left + w] = self.fill.to(out.dtype)
                return out
        return tensor


class ChannelExchange:
    """Draw ``idx`` uniformly in ``0..gray``; ``idx < 3`` copies channel ``idx`` into all three, else grays.

    With the default ``gray=2`` (both methods) the grayscale branch never fires (§0.2).
    """

    def __init__(self, gray: int = 2) -> None:
        if gray < 2:
            raise ValueError(f"gray must be >= 2, got {gray}")
        self.gray = gray

    def __call__(self, x: ImageLike, generator: torch.Generator) -> Tensor:
        tensor = _require_tensor(x, "ChannelExchange")
        idx = _randint(generator, 0, self.gray)
        single = tensor[idx : idx + 1] if idx < 3 else grayscale(tensor)
        return single.expand(3, -1, -1).clone()


class ChannelAdapGray:
    """Draw ``idx`` in 0..3: ``idx < 3`` copies that channel, ``idx == 3`` grays with probability ``p``.

    Net effect at ``p = 0.5``: 75 % single channel, 12.5 % grayscale, 12.5 % unchanged.
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: ImageLike, generator: torch.Generator) -> Tensor:
        tensor = _require_tensor(x, "ChannelAdapGray")
        idx = _randint(generator, 0, 3)
        if idx < 3:
            return tensor[idx : idx + 1].expand(3, -1, -1).clone()
        if float(torch.rand((), generator=generator)) < self.p:
            return grayscale(tensor).expand(3, -1, -1).clone()
        return tensor
