"""Decoding of uploaded or ingested images, with runtime errors mapped to service errors."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from vireid.api.errors import InvalidInputError, UnsupportedMediaTypeError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["decode", "sha256_hex"]


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of the encoded bytes (the gallery's duplicate key)."""
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes, *, max_pixels: int, source: str) -> Image.Image:
    """Decode an encoded image with the runtime decoder (architecture Contract 4).

    Args:
        data: encoded image bytes.
        max_pixels: largest accepted width × height; bigger images (decompression bombs) are refused
            from the header, before the pixels are decoded.
        source: name used in error messages (upload file name or path).

    Raises:
        InvalidInputError: empty, truncated, not an image, or over ``max_pixels``.
        UnsupportedMediaTypeError: an image format the runtime does not accept (GIF, TIFF, ...).
    """
    from vireid.serving.runtime import ImageDecodeError, UnsupportedImageType, decode_image

    if not data:
        raise InvalidInputError(f"{source}: empty file")
    try:
        image: Image.Image = decode_image(data, max_pixels=max_pixels)
    except UnsupportedImageType as exc:
        raise UnsupportedMediaTypeError(f"{source}: {exc}") from exc
    except ImageDecodeError as exc:
        raise InvalidInputError(f"{source}: {exc}") from exc
    return image
