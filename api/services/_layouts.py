"""Readers that turn a folder of crops, a CSV listing or a SYSU-MM01 tree into ingest records.

Each reader returns ``(records, failures)``: records sorted by path, and the rows that could not be
turned into a record (bad modality, bad timestamp, missing file) with the reason. Image content is not
read here; the ingest service decodes each file and reports unreadable ones.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from vireid.api._bounds import check_datetime
from vireid.api.errors import InvalidInputError
from vireid.api.services._records import IngestFailure, IngestRecord, parse_modality
from vireid.api.settings import Modality

__all__ = [
    "IMAGE_SUFFIXES",
    "SYSU_CAMERA_MODALITY",
    "SYSU_SPLITS",
    "parse_sysu_cameras",
    "read_csv",
    "read_folder",
    "read_sysu_mm01",
]

logger = logging.getLogger(__name__)

#: Suffixes picked up from folders. Formats the embedder refuses (GIF, TIFF, WebP) are still listed so
#: that the ingest summary reports them as failed instead of silently ignoring them.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

#: Official SYSU-MM01 cameras: 1, 2, 4, 5 are RGB (visible), 3 and 6 near-infrared (methods.md §0.1).
SYSU_CAMERA_MODALITY: Mapping[int, Modality] = {
    1: "visible",
    2: "visible",
    3: "infrared",
    4: "visible",
    5: "visible",
    6: "infrared",
}
SYSU_SPLITS = ("train", "val", "test", "all")

Scan = tuple[list[IngestRecord], list[IngestFailure]]


def _image_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def read_folder(
    root: Path,
    *,
    camera: str,
    modality: str,
    captured_at: datetime | None = None,
    track_id: str | None = None,
) -> Scan:
    """Every image file under ``root`` (recursive), all from one camera.

    Args:
        root: folder of crops.
        camera: camera name given to every image.
        modality: ``"visible"`` or ``"infrared"``.
        captured_at: optional capture time for every image.
        track_id: optional track id for every image.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        InvalidInputError: bad modality, empty camera or a capture time out of bounds.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    mod = parse_modality(modality)
    aware_time = check_datetime(captured_at, name="captured_at")
    records = [
        IngestRecord(
            source=str(path.resolve()),
            camera=camera,
            modality=mod,
            captured_at=aware_time,
            track_id=track_id,
            path=path,
        )
        for path in _image_files(root)
    ]
    logger.info("%s: %d image files", root, len(records))
    return records, []


def _parse_time(text: str | None) -> datetime | None:
    if text is None or not text.strip():
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InvalidInputError(f"captured_at is not ISO 8601: {text!r}") from exc
    return check_datetime(parsed, name="captured_at")


def _csv_row(
    row: Mapping[str, str | None], *, base: Path, camera: str | None, modality: str | None
) -> IngestRecord:
    raw_path = (row.get("path") or "").strip()
    if not raw_path:
        raise InvalidInputError("empty path")
    path = Path(raw_path)
    path = path if path.is_absolute() else base / path
    cam = (row.get("camera") or "").strip() or camera
    mod = (row.get("modality") or "").strip() or modality
    if not cam:
        raise InvalidInputError("no camera (column empty and no --camera)")
    if not mod:
        raise InvalidInputError("no modality (column empty and no --modality)")
    if not path.is_file():
        raise InvalidInputError(f"file not found: {path}")
    return IngestRecord(
        source=str(path.resolve()),
        camera=cam,
        modality=parse_modality(mod),
        captured_at=_parse_time(row.get("captured_at")),
        track_id=(row.get("track_id") or "").strip() or None,
        path=path,
    )


def read_csv(csv_path: Path, *, camera: str | None = None, modality: str | None = None) -> Scan:
    """Records listed in a CSV with a header row: ``path`` (required; relative to the CSV's folder),
    ``camera``, ``modality``, ``captured_at`` (ISO 8601; naive = UTC), ``track_id``.

    Args:
        csv_path: the CSV file (UTF-8).
        camera: used where the ``camera`` column is missing or empty.
        modality: used where the ``modality`` column is missing or empty.

    Returns:
        The valid rows as records, and the invalid rows as failures (``"<csv>:<line>"`` and reason).

    Raises:
        FileNotFoundError: no such file.
        InvalidInputError: no header or no ``path`` column.
    """
    if not csv_path.is_file():
        raise FileNotFoundError(f"no such CSV file: {csv_path}")
    records: list[IngestRecord] = []
    failures: list[IngestFailure] = []
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "path" not in [f.strip() for f in reader.fieldnames]:
            raise InvalidInputError(f"{csv_path}: needs a header row with a 'path' column")
        reader.fieldnames = [f.strip() for f in reader.fieldnames]
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            try:
                records.append(_csv_row(row, base=csv_path.parent, camera=camera, modality=modality))
            except InvalidInputError as exc:
                failures.append(IngestFailure(where, exc.detail))
    records.sort(key=lambda r: r.source)
    return records, failures


def _split_ids(root: Path, split: str) -> set[int]:
    names = ("train", "val", "test") if split == "all" else (split,)
    ids: set[int] = set()
    for name in names:
        path = root / "exp" / f"{name}_id.txt"
        if not path.is_file():
            raise FileNotFoundError(f"SYSU-MM01 split file missing: {path}")
        tokens = [t for t in re.split(r"[,\s]+", path.read_text(encoding="utf-8")) if t]
        try:
            ids.update(int(t) for t in tokens)
        except ValueError as exc:
            raise InvalidInputError(f"{path}: not a comma-separated list of ids ({exc})") from exc
    return ids


def parse_sysu_cameras(values: Iterable[str]) -> list[int]:
    """Camera numbers from ``"1"`` or ``"cam1"`` style names.

    Raises:
        InvalidInputError: a value is not one of the six SYSU-MM01 cameras.
    """
    cams = []
    for value in values:
        text = value.strip().lower().removeprefix("cam")
        if not text.isdigit() or int(text) not in SYSU_CAMERA_MODALITY:
            raise InvalidInputError(f"SYSU-MM01 cameras are 1..6 (or cam1..cam6), got {value!r}")
        cams.append(int(text))
    return sorted(set(cams))


def read_sysu_mm01(root: Path, *, split: str = "all", cameras: Iterable[str] | None = None) -> Scan:
    """Crops of the official SYSU-MM01 layout ``cam{1..6}/{pid:04d}/*.jpg`` (methods.md §0.1).

    Camera names are the folder names (``"cam1"``..``"cam6"``), the modality follows the camera
    (:data:`SYSU_CAMERA_MODALITY`) and ``track_id`` is the 4-digit identity folder.

    Args:
        root: dataset root holding ``cam1``..``cam6`` and ``exp/``.
        split: ``"train"``, ``"val"`` or ``"test"`` (identities from ``exp/<split>_id.txt``), or
            ``"all"`` (the union of the three lists).
        cameras: camera numbers or names to keep (default all six).

    Raises:
        FileNotFoundError: ``root`` or a split file is missing.
        InvalidInputError: unknown split or camera, or a malformed id file.
    """
    if split not in SYSU_SPLITS:
        raise InvalidInputError(f"split must be one of {', '.join(SYSU_SPLITS)}, got {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    ids = _split_ids(root, split)
    cams = parse_sysu_cameras(cameras) if cameras is not None else sorted(SYSU_CAMERA_MODALITY)
    records: list[IngestRecord] = []
    for cam in cams:
        cam_dir = root / f"cam{cam}"
        if not cam_dir.is_dir():
            logger.warning("SYSU-MM01 camera folder missing: %s", cam_dir)
            continue
        for pid_dir in sorted(p for p in cam_dir.iterdir() if p.is_dir() and p.name.isdigit()):
            if int(pid_dir.name) not in ids:
                continue
            for path in _image_files(pid_dir):
                records.append(
                    IngestRecord(
                        source=str(path.resolve()),
                        camera=f"cam{cam}",
                        modality=SYSU_CAMERA_MODALITY[cam],
                        track_id=pid_dir.name,
                        path=path,
                    )
                )
    records.sort(key=lambda r: r.source)
    logger.info("SYSU-MM01 %s split, cameras %s: %d crops", split, cams, len(records))
    return records, []
