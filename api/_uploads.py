"""Bounded reading of multipart uploads and parsing of small form values."""

from __future__ import annotations

from fastapi import UploadFile

from vireid.api.errors import PayloadTooLargeError

__all__ = ["parse_csv_list", "read_upload"]

_CHUNK_BYTES = 256 * 1024


def read_upload(upload: UploadFile, *, max_bytes: int) -> bytes:
    """Read an uploaded file in chunks, stopping as soon as it is over the limit.

    Call from a plain ``def`` handler (threadpool): it reads the spooled file synchronously.

    Args:
        upload: the multipart file.
        max_bytes: largest accepted size, in bytes.

    Raises:
        PayloadTooLargeError: the file is larger than ``max_bytes`` (HTTP 413).
    """
    chunks: list[bytes] = []
    size = 0
    upload.file.seek(0)
    while chunk := upload.file.read(_CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(
                f"{upload.filename or 'upload'}: larger than the {max_bytes}-byte upload limit"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_csv_list(text: str | None) -> list[str] | None:
    """``"a, b,c"`` → ``["a", "b", "c"]``; None or blank → None."""
    if text is None or not text.strip():
        return None
    return [part.strip() for part in text.split(",") if part.strip()]
