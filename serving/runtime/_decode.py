"""Safe decoding of uploaded image bytes (JPEG, PNG, BMP) with Pillow."""

from __future__ import annotations

import io
import threading
import warnings

from PIL import Image, UnidentifiedImageError

__all__ = ["ALLOWED_FORMATS", "ImageDecodeError", "UnsupportedImageType", "decode_image", "read_image_size"]

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP")

# ``warnings.catch_warnings`` edits process-wide state; the lock keeps concurrent header parses from
# restoring each other's filters. Only the header read runs under it, never the pixel decode.
_HEADER_LOCK = threading.Lock()


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image: empty, truncated, corrupt, or too many pixels."""


class UnsupportedImageType(ImageDecodeError):
    """The bytes are an image, but in a format other than JPEG, PNG or BMP."""


def _open_header(data: bytes, formats: tuple[str, ...] | None) -> Image.Image:
    with _HEADER_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=formats)


def _identify_other_format(data: bytes) -> str | None:
    """Name the Pillow format of bytes that none of ``ALLOWED_FORMATS`` accepted, or None."""
    try:
        with _open_header(data, None) as other:
            return str(other.format)
    except Exception:
        return None


def _check_args(data: object, max_pixels: object) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"image data must be bytes, got {type(data).__name__}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    data = bytes(data)
    if not data:
        raise ImageDecodeError("empty image data")
    return data


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only and check format, size and pixel count; the caller closes the image."""
    try:
        image = _open_header(data, ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        other = _identify_other_format(data)
        if other is not None:
            raise UnsupportedImageType(
                f"unsupported image type {other}; allowed: {', '.join(ALLOWED_FORMATS)}"
            ) from exc
        raise ImageDecodeError("data is not a recognised image (JPEG, PNG or BMP)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt image header: {exc}") from exc
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise ImageDecodeError(f"image has zero size {width}x{height}")
    if width * height > max_pixels:
        image.close()
        raise ImageDecodeError(
            f"image has {width}x{height} = {width * height} pixels, more than the {max_pixels} allowed"
        )
    return image


def read_image_size(data: bytes, *, max_pixels: int) -> tuple[int, int]:
    """Width and height of an uploaded image, read from its header without decoding any pixel.

    The same checks as :func:`decode_image` up to the pixel decode, so a request's images can be
    sized (and refused) before any of them is decoded. A truncated pixel stream is only found by
    :func:`decode_image`.

    Args:
        data: Raw file bytes.
        max_pixels: Largest allowed ``width * height``.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        UnsupportedImageType: an image in a format other than JPEG/PNG/BMP.
        ImageDecodeError: empty data, not an image, corrupt header, zero size, or more than
            ``max_pixels`` pixels.
        ValueError: ``max_pixels`` < 1.
        TypeError: ``data`` is not bytes-like.
    """
    with _open_checked(_check_args(data, max_pixels), max_pixels) as image:
        width, height = image.size
    return int(width), int(height)


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode an uploaded image, refusing anything unsafe or unsupported.

    The pixel count is checked from the header before any pixel is decoded, so a decompression bomb
    costs only a header parse. Pillow's own ``DecompressionBombWarning``/``DecompressionBombError``
    become :class:`ImageDecodeError` too.

    Args:
        data: Raw file bytes.
        max_pixels: Largest allowed ``width * height``.

    Returns:
        The fully loaded image in its file's mode (use ``convert("RGB")`` or the runtime preprocessing).

    Raises:
        UnsupportedImageType: an image in a format other than JPEG/PNG/BMP (e.g. GIF, TIFF, WebP).
        ImageDecodeError: empty data, not an image, truncated or corrupt data, zero size, or more than
            ``max_pixels`` pixels.
        ValueError: ``max_pixels`` < 1.
        TypeError: ``data`` is not bytes-like.
    """
    data = _check_args(data, max_pixels)
    image = _open_checked(data, max_pixels)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        image.close()
        raise ImageDecodeError(f"truncated or corrupt {image.format} image: {exc}") from exc
    return image
