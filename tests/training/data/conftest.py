"""Helpers for the data-layer tests: tiny image files in fake dataset layouts under tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, *, value: int = 128, size: tuple[int, int] = (8, 4)) -> Path:
    """Write a small solid-colour JPEG of (height, width) ``size``; returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size[0], size[1], 3), value, dtype=np.uint8)
    Image.fromarray(array).save(path, format="JPEG")
    return path


@pytest.fixture
def image_writer() -> Callable[..., Path]:
    return write_image
