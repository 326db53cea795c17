"""SALCR's stage-1 ``LinearTransform`` on the visible plain view (methods.md §A.2)."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from vireid.training.data._transforms import ImageLike, _box_size, _randint, _require_tensor

logger = logging.getLogger(__name__)

STOP_THRESHOLD = 1e-6
MAX_BOXES = (
    10_000  # safety cap; the rule stops after about 11 boxes on average at 288x144 (median 11, p99 23)
)


def _arcsine(generator: torch.Generator) -> float:
    """One draw of Beta(0.5, 0.5) (the arcsine law) by inversion: ``sin²(πU/2)``."""
    return math.sin(math.pi * float(torch.rand((), generator=generator)) / 2.0) ** 2


def linear_transform(
    x: Tensor,
    *,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: float = 0.3,
    threshold: float = STOP_THRESHOLD,
    max_boxes: int = MAX_BOXES,
) -> tuple[Tensor, Tensor]:
    """Rescale random boxes channel by channel until some pixel is darkened to ``threshold`` of itself.

    Loop: draw a box (area ``U(scale)·H·W``, aspect ``U(ratio, 1/ratio)``; redrawn when it does not fit
    strictly inside); for each channel whose box maximum is > 0, multiply the box by ``Beta(0.5, 0.5) / max``
    (so the box maximum becomes the Beta draw) and accumulate the factor in a multiplier map ``M``. Return
    once ``min(M) <= threshold``. ``max_boxes`` draws (fitting or not) bound the loop.

    Args:
        x: (3, H, W) float tensor in [0, 1] (before normalisation).
        generator: Source of every random draw.
        scale: Range of the box area as a fraction of H·W.
        ratio: Aspect range is ``[ratio, 1/ratio]``.
        threshold: Stop rule on ``min(M)``.
        max_boxes: Safety cap on the number of draws.

    Returns:
        ``(out, M)``: the transformed (3, H, W) tensor (``out == x * M``) and the (3, H, W) multiplier map.
    """
    out = _require_tensor(x, "linear_transform").clone()
    multiplier = torch.ones_like(out)
    height, width = out.shape[-2:]
    for _ in range(max_boxes):
        h, w = _box_size(generator, area=height * width, scale=scale, ratio=ratio)
        if not (h < height and w < width):
            continue
        top, left = _randint(generator, 0, height - h), _randint(generator, 0, width - w)
        for channel in range(out.shape[0]):
            box = out[channel, top : top + h, left : left + w]
            peak = float(box.max())
            if peak > 0:
                factor = _arcsine(generator) / peak
                box.mul_(factor)
                multiplier[channel, top : top + h, left : left + w] *= factor
        if float(multiplier.min()) <= threshold:
            return out, multiplier
    logger.debug("linear_transform stopped at the %d-box cap", max_boxes)
    return out, multiplier


class LinearTransform:
    """Apply :func:`linear_transform` with probability ``p`` (SALCR stage 1, visible plain view, §A.2)."""

    def __init__(
        self, p: float = 0.5, *, scale: tuple[float, float] = (0.02, 0.4), ratio: float = 0.3
    ) -> None:
        self.p, self.scale, self.ratio = p, (float(scale[0]), float(scale[1])), ratio

    def __call__(self, x: ImageLike, generator: torch.Generator) -> Tensor:
        tensor = _require_tensor(x, "LinearTransform")
        if float(torch.rand((), generator=generator)) >= self.p:
            return tensor
        out, _ = linear_transform(tensor, generator=generator, scale=self.scale, ratio=self.ratio)
        return out
