"""Image records shared by every dataset reader (docs/architecture.md Contract 8)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Modality = Literal["visible", "infrared"]
MODALITIES: tuple[Modality, Modality] = ("visible", "infrared")

# Accepted spellings of the two modalities in user-written files (cameras.yaml, CLI options).
_MODALITY_ALIASES: dict[str, Modality] = {
    "visible": "visible",
    "rgb": "visible",
    "vis": "visible",
    "color": "visible",
    "colour": "visible",
    "infrared": "infrared",
    "ir": "infrared",
    "nir": "infrared",
    "thermal": "infrared",
}

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


@dataclass(frozen=True, order=True)
class ImageRecord:
    """One image of a dataset.

    Attributes:
        path: Absolute (resolved from the dataset root) path of the image file.
        modality: ``"visible"`` or ``"infrared"``.
        camera: Camera name, e.g. ``"cam3"`` (SYSU-MM01, RegDB, LLCM) or the folder name of a
            camera-folder dataset.
        pid: Ground-truth identity when the dataset has one, else ``None``. Training never needs it.
    """

    path: Path
    modality: Modality
    camera: str
    pid: int | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")


def normalize_modality(name: str) -> Modality:
    """Map a user-written modality name (``rgb``, ``ir``, ``thermal``, ...) to ``visible``/``infrared``.

    Raises:
        ValueError: When the name is not a known spelling.
    """
    key = str(name).strip().lower()
    if key not in _MODALITY_ALIASES:
        raise ValueError(f"unknown modality {name!r}; use one of {sorted(_MODALITY_ALIASES)}")
    return _MODALITY_ALIASES[key]


def require_dir(path: Path, *, what: str, layout: str) -> Path:
    """Return ``path`` if it is a directory, else raise ``FileNotFoundError`` naming the expected layout."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} (expected layout: {layout})")
    return path


def require_file(path: Path, *, what: str, layout: str) -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming the expected layout."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (expected layout: {layout})")
    return path


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Sorted image files (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``) in ``folder``; empty if it is missing."""
    if not folder.is_dir():
        return []
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_list_file(path: Path) -> list[tuple[str, int]]:
    """Parse an index file of ``"relative_path label"`` lines (RegDB, LLCM).

    Blank lines are skipped. Raises ``ValueError`` naming the file and line on a malformed line.
    """
    entries: list[tuple[str, int]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            raise ValueError(f"{path}:{number}: expected 'relative_path label', got {line!r}")
        entries.append((parts[0], int(parts[1])))
    return entries


def sort_records(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Records sorted by path (the order every reader returns, Contract 8)."""
    return sorted(records, key=lambda r: str(r.path))
