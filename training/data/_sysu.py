"""SYSU-MM01 on its raw release layout (methods.md §0.1, §C.1)."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Literal

from vireid.training.data._records import (
    ImageRecord,
    Modality,
    list_images,
    require_dir,
    require_file,
    sort_records,
)

logger = logging.getLogger(__name__)

SYSU_LAYOUT = "ROOT/cam{1..6}/{pid:04d}/*.jpg + ROOT/exp/{train,val,test}_id.txt"
SYSU_VISIBLE_CAMERAS: tuple[int, ...] = (1, 2, 4, 5)
SYSU_INFRARED_CAMERAS: tuple[int, ...] = (3, 6)
# Gallery cameras of the two SYSU-MM01 search modes, in the order the protocol visits them (§C.1).
SYSU_GALLERY_CAMERAS: dict[str, tuple[int, ...]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
SYSU_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train", "val"), "test": ("test",)}


def read_sysu_ids(root: str | Path, name: str) -> list[int]:
    """Identity list ``ROOT/exp/<name>_id.txt`` (comma or whitespace separated integers), sorted.

    Raises:
        FileNotFoundError: When the list file is missing.
        ValueError: When it holds something that is not an integer.
    """
    path = require_file(
        Path(root) / "exp" / f"{name}_id.txt", what=f"SYSU-MM01 {name} id list", layout=SYSU_LAYOUT
    )
    tokens = [t for t in re.split(r"[,\s]+", path.read_text()) if t]
    try:
        return sorted({int(t) for t in tokens})
    except ValueError as exc:
        raise ValueError(f"{path}: identity lists hold comma-separated integers ({exc})") from exc


def _camera_modality(camera: int) -> Modality:
    return "infrared" if camera in SYSU_INFRARED_CAMERAS else "visible"


def _check_root(root: Path) -> None:
    require_dir(root, what="SYSU-MM01 root", layout=SYSU_LAYOUT)
    missing = [
        f"cam{c}" for c in (*SYSU_VISIBLE_CAMERAS, *SYSU_INFRARED_CAMERAS) if not (root / f"cam{c}").is_dir()
    ]
    if missing:
        raise FileNotFoundError(
            f"SYSU-MM01 camera folders missing under {root}: {missing} (expected layout: {SYSU_LAYOUT})"
        )


def _records_for(root: Path, pids: list[int], cameras: tuple[int, ...]) -> list[ImageRecord]:
    """Records of ``pids`` in ``cameras``, visited pid-major then camera in the given order."""
    records: list[ImageRecord] = []
    for pid in pids:
        for cam in cameras:
            for path in list_images(root / f"cam{cam}" / f"{pid:04d}"):
                records.append(
                    ImageRecord(path=path, modality=_camera_modality(cam), camera=f"cam{cam}", pid=pid)
                )
    return records


def sysu_mm01(root: str | Path, *, split: Literal["train", "test"] = "train") -> list[ImageRecord]:
    """All images of a SYSU-MM01 split, both modalities, read from the raw layout.

    ``split="train"`` uses the train + val identities (395 ids in the full release), ``"test"`` the test ids.
    Cameras 1, 2, 4, 5 are visible and 3, 6 infrared; ``camera`` is the folder name (``"cam3"``) and ``pid``
    the identity folder as an integer (methods.md §0.1).

    Returns:
        Records sorted by path.

    Raises:
        FileNotFoundError: Missing root, camera folder or ``exp/*_id.txt`` list.
        ValueError: Unknown ``split``.
    """
    if split not in SYSU_SPLITS:
        raise ValueError(f"split must be one of {sorted(SYSU_SPLITS)}, got {split!r}")
    base = Path(root)
    _check_root(base)
    pids = sorted({pid for name in SYSU_SPLITS[split] for pid in read_sysu_ids(base, name)})
    records = _records_for(base, pids, (*SYSU_VISIBLE_CAMERAS, *SYSU_INFRARED_CAMERAS))
    logger.debug("SYSU-MM01 %s: %d ids, %d images", split, len(pids), len(records))
    return sort_records(records)


def sysu_mm01_test(
    root: str | Path, *, mode: Literal["all", "indoor"] = "all", trial: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Query and gallery of one SYSU-MM01 single-shot evaluation trial (methods.md §C.1).

    Query: every infrared image of the test ids from cameras 3 and 6 (identical in both modes).
    Gallery: ``random.seed(trial)`` (Python ``random``), then for each test pid in ascending order and each
    gallery camera in the listed order (``[1, 2, 4, 5]`` for ``"all"``, ``[1, 2]`` for ``"indoor"``) whose
    folder holds images, ``random.choice(sorted(files))``. The global ``random`` state is saved and restored,
    so callers are not affected.

    Both lists keep the protocol's visiting order (pid-major, then camera), not path order, so rankings
    break ties exactly as the reference evaluation does.

    Raises:
        FileNotFoundError: Missing root, camera folder or ``exp/test_id.txt``.
        ValueError: Unknown ``mode`` or a negative ``trial``.
    """
    if mode not in SYSU_GALLERY_CAMERAS:
        raise ValueError(f"mode must be one of {sorted(SYSU_GALLERY_CAMERAS)}, got {mode!r}")
    if trial < 0:
        raise ValueError(f"trial must be >= 0, got {trial}")
    base = Path(root)
    _check_root(base)
    pids = read_sysu_ids(base, "test")
    query = _records_for(base, pids, SYSU_INFRARED_CAMERAS)
    state = random.getstate()
    try:
        random.seed(trial)
        gallery: list[ImageRecord] = []
        for pid in pids:
            for cam in SYSU_GALLERY_CAMERAS[mode]:
                files = list_images(base / f"cam{cam}" / f"{pid:04d}")
                if files:
                    chosen = random.choice(sorted(files, key=str))
                    gallery.append(ImageRecord(path=chosen, modality="visible", camera=f"cam{cam}", pid=pid))
    finally:
        random.setstate(state)
    return query, gallery
