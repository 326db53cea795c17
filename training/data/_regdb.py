"""RegDB on its raw layout with the ten ``idx`` split files (methods.md §0.1, §C.2)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from vireid.training.data._records import (
    ImageRecord,
    Modality,
    read_list_file,
    require_dir,
    require_file,
    sort_records,
)

logger = logging.getLogger(__name__)

REGDB_LAYOUT = (
    "ROOT/idx/{train,test}_{visible,thermal}_{t}.txt (t = 1..10, lines 'relative_path label') + images"
)
REGDB_TRIALS = range(1, 11)
# RegDB has one camera per modality; §C.2 calls them camera 1 (visible) and camera 2 (thermal).
_REGDB_FILES: dict[Modality, tuple[str, str]] = {
    "visible": ("visible", "cam1"),
    "infrared": ("thermal", "cam2"),
}
REGDB_DIRECTIONS: dict[str, tuple[Modality, Modality]] = {
    "visible_to_thermal": ("visible", "infrared"),
    "thermal_to_visible": ("infrared", "visible"),
}


def _regdb_modality(root: Path, *, trial: int, split: str, modality: Modality) -> list[ImageRecord]:
    stem, camera = _REGDB_FILES[modality]
    list_path = require_file(
        root / "idx" / f"{split}_{stem}_{trial}.txt", what="RegDB list file", layout=REGDB_LAYOUT
    )
    records = []
    for relative, label in read_list_file(list_path):
        path = root / relative
        records.append(ImageRecord(path=path, modality=modality, camera=camera, pid=label))
    return records


def _check(root: Path, trial: int, split: str) -> None:
    require_dir(root, what="RegDB root", layout=REGDB_LAYOUT)
    if trial not in REGDB_TRIALS:
        raise ValueError(f"RegDB trial must be in 1..10, got {trial}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def regdb(root: str | Path, *, trial: int, split: Literal["train", "test"] = "train") -> list[ImageRecord]:
    """Visible and thermal images of one RegDB split (methods.md §0.1).

    Reads ``idx/{split}_visible_{trial}.txt`` and ``idx/{split}_thermal_{trial}.txt``; paths in the lists
    are relative to ``root`` and ``pid`` is the list's label. Camera is ``"cam1"`` (visible) / ``"cam2"``
    (thermal).
    Image files are not opened or checked here.

    Returns:
        Records sorted by path.

    Raises:
        FileNotFoundError: Missing root or list file.
        ValueError: ``trial`` outside 1..10, unknown ``split``, or a malformed list line.
    """
    base = Path(root)
    _check(base, trial, split)
    records = [
        record
        for modality in ("visible", "infrared")
        for record in _regdb_modality(base, trial=trial, split=split, modality=modality)
    ]
    logger.debug("RegDB trial %d %s: %d images", trial, split, len(records))
    return sort_records(records)


def regdb_test(
    root: str | Path,
    *,
    trial: int,
    direction: Literal["visible_to_thermal", "thermal_to_visible"] = "visible_to_thermal",
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Query and gallery of a RegDB test split in one direction (methods.md §C.2).

    ``"visible_to_thermal"``: query = ``test_visible_{trial}``, gallery = ``test_thermal_{trial}``;
    ``"thermal_to_visible"`` swaps them. Every listed image is used, in list-file order.

    Raises:
        FileNotFoundError: Missing root or list file.
        ValueError: ``trial`` outside 1..10 or unknown ``direction``.
    """
    if direction not in REGDB_DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(REGDB_DIRECTIONS)}, got {direction!r}")
    base = Path(root)
    _check(base, trial, "test")
    query_modality, gallery_modality = REGDB_DIRECTIONS[direction]
    query = _regdb_modality(base, trial=trial, split="test", modality=query_modality)
    gallery = _regdb_modality(base, trial=trial, split="test", modality=gallery_modality)
    return query, gallery
