"""Helpers for evaluation tests: a tiny model with ``extract`` and images with per-identity patterns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

IMG_H, IMG_W = 16, 8


class DummyReID(nn.Module):
    """Contract-1 stand-in: 4×2 grid of channel means plus a left-half brightness term, so horizontal
    flipping changes the embedding. Counts the rows it embeds (``rows_seen``)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.rows_seen = 0
        self.default_cfg = {
            "method": "dummy",
            "variant": "tiny",
            "input_size": (3, IMG_H, IMG_W),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bilinear",
            "flip_average": True,
            "embed_dim": 25,
        }

    def extract(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        if modality not in ("visible", "infrared"):
            raise ValueError(modality)
        self.rows_seen += x.shape[0]
        grid = F.adaptive_avg_pool2d(x, (4, 2)).flatten(1) * self.scale  # (B, 24)
        left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))[:, None]
        return torch.cat([grid, 3.0 * left], dim=1)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """Minimal eval transform for tests: resize, [0, 1] → [-1, 1], CHW float32."""
    arr = np.asarray(img.resize((IMG_W, IMG_H), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy((arr - 0.5) / 0.5).permute(2, 0, 1).contiguous()


def identity_pattern(pid: int) -> np.ndarray:
    """(IMG_H, IMG_W, 3) uint8 pattern unique to ``pid``."""
    rng = np.random.default_rng(1000 + pid)
    blocks = rng.integers(0, 256, size=(4, 2, 3))
    return np.kron(blocks, np.ones((IMG_H // 4, IMG_W // 2, 1))).astype(np.uint8)


def write_person(path: Path, pid: int, *, noise_seed: int) -> Path:
    """Write an image of identity ``pid``: its pattern + small noise (same pattern in both modalities, so the
    dummy model retrieves perfectly and protocol bookkeeping errors show up as metric changes)."""
    rng = np.random.default_rng(noise_seed)
    img = identity_pattern(pid).astype(np.float32) + rng.normal(0, 6, size=(IMG_H, IMG_W, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


# SYSU fake layout: test ids 1..5. pid 1 has visible images only in cam2, so every cam-3 query of pid 1 loses
# its matches to the camera filter. pid 5 has no infrared images (not a query).
SYSU_TEST_IDS = (1, 2, 3, 4, 5)
SYSU_VISIBLE = {1: (2,), 2: (1, 2, 4, 5), 3: (1, 4), 4: (2, 5), 5: (1, 2)}
SYSU_INFRARED = {1: (3, 6), 2: (3,), 3: (6,), 4: (3, 6)}
SYSU_IMAGES_PER_CAM = 2
