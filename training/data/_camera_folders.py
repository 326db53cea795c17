"""Camera-folder layout for new, unlabeled camera data (docs/architecture.md Contract 8).

Layout::

    ROOT/cameras.yaml          camera name -> modality ("visible"/"infrared"; rgb/ir/thermal/nir accepted)
    ROOT/<camera>/**/*.jpg     images of that camera (any sub-folders; .jpg/.jpeg/.png/.bmp)
    ROOT/identities.csv        optional, header "path,pid": ground truth used only for evaluation
    ROOT/split.csv             optional, header "path,split": e.g. "train"/"test" held-out split

Paths in the CSV files are relative to ROOT, with forward slashes.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path

import yaml

from vireid.training.data._records import (
    ImageRecord,
    Modality,
    list_images,
    normalize_modality,
    require_dir,
    require_file,
    sort_records,
)

logger = logging.getLogger(__name__)

CAMERA_FOLDERS_LAYOUT = "ROOT/<camera>/**/*.jpg + ROOT/cameras.yaml ({camera: visible|infrared})"
CAMERAS_FILE = "cameras.yaml"
IDENTITIES_FILE = "identities.csv"
SPLIT_FILE = "split.csv"


def read_cameras_yaml(root: str | Path) -> dict[str, Modality]:
    """Read ``ROOT/cameras.yaml``: a mapping camera -> modality (optionally under a ``cameras:`` key).

    Raises:
        FileNotFoundError: The file is missing.
        ValueError: It is not a non-empty mapping of names to known modalities.
    """
    path = require_file(Path(root) / CAMERAS_FILE, what="camera modality file", layout=CAMERA_FOLDERS_LAYOUT)
    content = yaml.safe_load(path.read_text())
    if isinstance(content, dict) and isinstance(content.get("cameras"), dict):
        content = content["cameras"]
    if not isinstance(content, dict) or not content:
        raise ValueError(f"{path}: expected a mapping 'camera: visible|infrared', got {content!r}")
    return {str(name): normalize_modality(str(modality)) for name, modality in content.items()}


def write_cameras_yaml(root: str | Path, cameras: Mapping[str, str]) -> Path:
    """Write ``ROOT/cameras.yaml`` for ``cameras`` (camera -> modality, normalised); returns its path."""
    path = Path(root) / CAMERAS_FILE
    mapping = {str(name): normalize_modality(modality) for name, modality in cameras.items()}
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def _read_csv_column(path: Path, column: str) -> dict[str, str]:
    """Map ``path`` -> ``column`` from a two-column CSV with a header; ValueError on a bad header."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "path" not in reader.fieldnames or column not in reader.fieldnames:
            raise ValueError(f"{path}: expected a header 'path,{column}', got {reader.fieldnames}")
        return {row["path"].strip(): row[column].strip() for row in reader}


def read_identities(root: str | Path) -> dict[str, int]:
    """``ROOT/identities.csv`` as relative path -> pid; empty when the file does not exist.

    Raises:
        ValueError: Bad header or a pid that is not an integer.
    """
    path = Path(root) / IDENTITIES_FILE
    if not path.is_file():
        return {}
    raw = _read_csv_column(path, "pid")
    try:
        return {key: int(value) for key, value in raw.items()}
    except ValueError as exc:
        raise ValueError(f"{path}: pid must be an integer ({exc})") from exc


def read_split(root: str | Path) -> dict[str, str]:
    """``ROOT/split.csv`` as relative path -> split name.

    Raises:
        FileNotFoundError: The file is missing.
        ValueError: Bad header.
    """
    path = require_file(
        Path(root) / SPLIT_FILE, what="split file", layout="ROOT/split.csv with header 'path,split'"
    )
    return _read_csv_column(path, "split")


def _relative_key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def camera_folders(
    root: str | Path,
    *,
    cameras: Mapping[str, str] | None = None,
    split: str | None = None,
) -> list[ImageRecord]:
    """Read a camera-folder dataset: every image under ``ROOT/<camera>/`` for each declared camera.

    Args:
        root: Dataset root.
        cameras: Camera -> modality; when ``None``, read from ``ROOT/cameras.yaml``. Only these cameras are
            read; other folders are ignored.
        split: When given, keep only images that ``ROOT/split.csv`` assigns to this split.

    Returns:
        Records sorted by path, with ``pid`` from ``ROOT/identities.csv`` when listed there, else ``None``.

    Raises:
        FileNotFoundError: Missing root, ``cameras.yaml`` (when ``cameras`` is None), camera folder, or
            ``split.csv`` (when ``split`` is given).
        ValueError: Unknown modality names or malformed CSV files.
    """
    base = require_dir(Path(root), what="camera-folder dataset root", layout=CAMERA_FOLDERS_LAYOUT)
    modalities = (
        read_cameras_yaml(base)
        if cameras is None
        else {str(k): normalize_modality(v) for k, v in cameras.items()}
    )
    if not modalities:
        raise ValueError("at least one camera is needed")
    identities = read_identities(base)
    assignment = read_split(base) if split is not None else None
    records: list[ImageRecord] = []
    for camera, modality in modalities.items():
        folder = require_dir(base / camera, what=f"folder of camera {camera!r}", layout=CAMERA_FOLDERS_LAYOUT)
        for path in list_images(folder, recursive=True):
            key = _relative_key(path, base)
            if assignment is not None and assignment.get(key) != split:
                continue
            records.append(ImageRecord(path=path, modality=modality, camera=camera, pid=identities.get(key)))
    if assignment is not None and not records:
        logger.warning("no image of %s is assigned to split %r", base, split)
    logger.debug("camera folders %s: %d images from %d cameras", base, len(records), len(modalities))
    return sort_records(records)
