"""Decoding of uploaded or ingested images, with runtime errors mapped to service errors."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vireid.api.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaTypeError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["check_request_pixels", "decode", "image_pixels", "sha256_hex"]


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of the encoded bytes (the gallery's duplicate key)."""
    return hashlib.sha256(data).hexdigest()


def image_pixels(data: bytes, *, max_pixels: int, source: str) -> int:
    """Pixel count (width × height) of an encoded image, from its header; no pixel is decoded.

    Args:
        data: encoded image bytes.
        max_pixels: largest accepted width × height.
        source: name used in error messages.

    Raises:
        InvalidInputError: empty, not an image, corrupt header, or over ``max_pixels``.
        UnsupportedMediaTypeError: an image format the runtime does not accept.
    """
    from vireid.serving.runtime import ImageDecodeError, UnsupportedImageType, read_image_size

    if not data:
        raise InvalidInputError(f"{source}: empty file")
    try:
        width, height = read_image_size(data, max_pixels=max_pixels)
    except UnsupportedImageType as exc:
        raise UnsupportedMediaTypeError(f"{source}: {exc}") from exc
    except ImageDecodeError as exc:
        raise InvalidInputError(f"{source}: {exc}") from exc
    return width * height


def check_request_pixels(
    images: Sequence[tuple[str, bytes]], *, max_image_pixels: int, max_request_pixels: int
) -> int:
    """Refuse a request whose images would decode to more pixels than allowed, before decoding any.

    Args:
        images: ``(name, encoded bytes)`` of each image of the request.
        max_image_pixels: largest accepted width × height of one image.
        max_request_pixels: largest accepted sum of width × height over the request's images
            (``Settings.max_request_pixels``).

    Returns:
        The request's pixel count.

    Raises:
        PayloadTooLargeError: the sum is over ``max_request_pixels`` (HTTP 413).
        InvalidInputError, UnsupportedMediaTypeError: an image whose header cannot be read or that is
            over ``max_image_pixels`` (as :func:`image_pixels`).
    """
    total = sum(image_pixels(data, max_pixels=max_image_pixels, source=name) for name, data in images)
    if total > max_request_pixels:
        raise PayloadTooLargeError(
            f"the request's {len(images)} image(s) have {total} pixels in all, more than the "
            f"{max_request_pixels} allowed per request; send fewer or smaller images per request"
        )
    return total


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
