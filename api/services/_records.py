"""What the ingest service consumes: one record per image, plus per-file failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from vireid.api.errors import InvalidInputError, PayloadTooLargeError
from vireid.api.settings import MODALITIES, Modality

__all__ = ["IngestFailure", "IngestRecord", "parse_modality"]


def parse_modality(value: str) -> Modality:
    """Validate a modality name.

    Raises:
        InvalidInputError: ``value`` is not ``"visible"`` or ``"infrared"``.
    """
    text = value.strip().lower()
    if text == "visible":
        return "visible"
    if text == "infrared":
        return "infrared"
    raise InvalidInputError(f"modality must be one of {', '.join(MODALITIES)}, got {value!r}")


@dataclass(frozen=True)
class IngestRecord:
    """One image to add to the gallery, either a file (``path``) or uploaded bytes (``data``).

    Attributes:
        source: where the image came from (file path or upload file name), stored as metadata.
        camera: camera name, free text (e.g. ``"cam3"``).
        modality: ``"visible"`` or ``"infrared"``.
        captured_at: capture time (naive = UTC), or None; checked by the gallery service.
        track_id: tracker / identity label, or None.
        path: file to read, when ``data`` is None.
        data: the encoded image bytes, when already in memory.
    """

    source: str
    camera: str
    modality: Modality
    captured_at: datetime | None = None
    track_id: str | None = None
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.camera:
            raise InvalidInputError(f"{self.source}: camera must not be empty")
        parse_modality(self.modality)
        if (self.path is None) == (self.data is None):
            raise ValueError("IngestRecord needs exactly one of path and data")

    def read_bytes(self, *, max_bytes: int) -> bytes:
        """The encoded image.

        Args:
            max_bytes: largest accepted file size, in bytes.

        Raises:
            PayloadTooLargeError: the file is larger than ``max_bytes``.
            OSError: the file cannot be read.
        """
        if self.data is not None:
            data = self.data
        else:
            assert self.path is not None
            with self.path.open("rb") as handle:
                data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise PayloadTooLargeError(f"{self.source}: larger than the {max_bytes}-byte limit")
        return data


@dataclass(frozen=True)
class IngestFailure:
    """A file or row that was skipped, with the reason."""

    source: str
    reason: str
