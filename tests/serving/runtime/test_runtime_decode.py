"""decode_image failure modes and happy paths (serving/runtime/_decode.py)."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from vireid.serving.runtime import ImageDecodeError, UnsupportedImageType, decode_image

MAX_PIXELS = 4_000_000


def _encode(fmt: str, size: tuple[int, int] = (40, 80), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height; only a header, a few dozen bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_decodes_allowed_formats(fmt: str) -> None:
    image = decode_image(_encode(fmt), max_pixels=MAX_PIXELS)
    assert image.format == fmt
    assert image.size == (40, 80)
    assert np.asarray(image.convert("RGB")).shape == (80, 40, 3)


def test_grey_png_keeps_mode() -> None:
    assert decode_image(_encode("PNG", mode="L"), max_pixels=MAX_PIXELS).mode == "L"


def test_empty_bytes() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", max_pixels=MAX_PIXELS)


def test_truncated_jpeg() -> None:
    data = _encode("JPEG", size=(200, 300))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], max_pixels=MAX_PIXELS)


def test_truncated_png() -> None:
    data = _encode("PNG", size=(64, 64))
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) - 200], max_pixels=MAX_PIXELS)


def test_text_file_is_not_an_image() -> None:
    with pytest.raises(ImageDecodeError, match="not a recognised image") as info:
        decode_image(b"hello, this is a text file\n" * 10, max_pixels=MAX_PIXELS)
    assert not isinstance(info.value, UnsupportedImageType)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP"])
def test_other_formats_are_unsupported(fmt: str) -> None:
    try:
        data = _encode(fmt)
    except (KeyError, OSError):
        pytest.skip(f"this Pillow cannot write {fmt}")
    with pytest.raises(UnsupportedImageType, match=fmt):
        decode_image(data, max_pixels=MAX_PIXELS)


def test_header_bomb_refused_by_our_limit_before_decoding() -> None:
    data = _png_header_only(5_000, 5_000)  # 25 Mpx: under Pillow's global limit, over ours
    assert len(data) < 200
    with pytest.raises(ImageDecodeError, match="5000x5000"):
        decode_image(data, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("max_pixels", [MAX_PIXELS, 10**12])
def test_20000x20000_header_bomb(max_pixels: int) -> None:
    # 400 Mpx is above 2x Pillow's global MAX_IMAGE_PIXELS: Pillow's DecompressionBombError fires while
    # reading the header and must surface as ImageDecodeError whatever our own limit is.
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(_png_header_only(20_000, 20_000), max_pixels=max_pixels)


def test_pillow_bomb_warning_becomes_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 40x80 = 3200 px is in (2000, 4000]: warning zone
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(_encode("PNG"), max_pixels=MAX_PIXELS)


def test_exact_pixel_limit() -> None:
    data = _encode("PNG", size=(40, 80))
    assert decode_image(data, max_pixels=3200).size == (40, 80)
    with pytest.raises(ImageDecodeError, match="more than the 3199 allowed"):
        decode_image(data, max_pixels=3199)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        decode_image("not bytes", max_pixels=MAX_PIXELS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(_encode("PNG"), max_pixels=0)


def test_concurrent_decoding_is_consistent() -> None:
    good, bomb = _encode("JPEG"), _png_header_only(20_000, 20_000)

    def work(i: int) -> str:
        try:
            decode_image(bomb if i % 2 else good, max_pixels=MAX_PIXELS)
        except ImageDecodeError:
            return "refused"
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(40)))
    assert results == ["ok", "refused"] * 20


def test_read_image_size_reads_the_header_only() -> None:
    from vireid.serving.runtime import read_image_size

    assert read_image_size(_encode("PNG", (40, 80)), max_pixels=MAX_PIXELS) == (40, 80)
    assert read_image_size(_encode("JPEG", (33, 17)), max_pixels=MAX_PIXELS) == (33, 17)
    # A header that promises 6000x6000 with no pixel data behind it: sized, not decoded.
    assert read_image_size(_png_header_only(6000, 6000), max_pixels=40_000_000) == (6000, 6000)
    with pytest.raises(ImageDecodeError, match="more than the"):
        read_image_size(_png_header_only(6000, 6000), max_pixels=MAX_PIXELS)
    with pytest.raises(UnsupportedImageType):
        read_image_size(_encode("GIF"), max_pixels=MAX_PIXELS)
    with pytest.raises(ImageDecodeError, match="empty"):
        read_image_size(b"", max_pixels=MAX_PIXELS)
    with pytest.raises(ValueError):
        read_image_size(b"x", max_pixels=0)
