"""LLCM read through its released list files.

Layout (checked against public LLCM loaders, since methods.md §0.1 keeps LLCM out of parity scope):
``ROOT/idx/{train,test}_{vis,nir}.txt`` with ``"relative_path label"`` lines, where paths look like
``nir/0001/0001_c06_s185587_f4140_nir.jpg``: the camera is the ``_c<NN>_`` token of the file name.
"""

from __future__ import annotations

import logging
import re
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

LLCM_LAYOUT = (
    "ROOT/idx/{train,test}_{vis,nir}.txt (lines 'relative_path label', file names '<pid>_c<NN>_...jpg')"
)
_LLCM_STEMS: dict[Modality, str] = {"visible": "vis", "infrared": "nir"}
_CAMERA_TOKEN = re.compile(r"_c(\d+)")
LLCM_DIRECTIONS: dict[str, tuple[Modality, Modality]] = {
    "infrared_to_visible": ("infrared", "visible"),
    "visible_to_infrared": ("visible", "infrared"),
}


def _llcm_modality(root: Path, *, split: str, modality: Modality) -> list[ImageRecord]:
    list_path = require_file(
        root / "idx" / f"{split}_{_LLCM_STEMS[modality]}.txt", what="LLCM list file", layout=LLCM_LAYOUT
    )
    records = []
    for relative, label in read_list_file(list_path):
        match = _CAMERA_TOKEN.search(Path(relative).name)
        if match is None:
            raise ValueError(
                f"{list_path}: no '_c<NN>' camera token in file name {relative!r} ({LLCM_LAYOUT})"
            )
        camera = f"cam{int(match.group(1))}"
        records.append(ImageRecord(path=root / relative, modality=modality, camera=camera, pid=label))
    return records


def _check(root: Path, split: str) -> None:
    require_dir(root, what="LLCM root", layout=LLCM_LAYOUT)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def llcm(root: str | Path, *, split: Literal["train", "test"] = "train") -> list[ImageRecord]:
    """Visible and near-infrared images of an LLCM split.

    ``pid`` is the list label; ``camera`` is ``"cam<N>"`` from the file name's ``_c<NN>`` token (LLCM cameras
    record both modalities, so a camera name can appear in both).

    Returns:
        Records sorted by path.

    Raises:
        FileNotFoundError: Missing root or list file.
        ValueError: Unknown ``split``, malformed list line or a file name without a camera token.
    """
    base = Path(root)
    _check(base, split)
    records = [
        record
        for modality in ("visible", "infrared")
        for record in _llcm_modality(base, split=split, modality=modality)
    ]
    logger.debug("LLCM %s: %d images", split, len(records))
    return sort_records(records)


def llcm_test(
    root: str | Path,
    *,
    direction: Literal["infrared_to_visible", "visible_to_infrared"] = "infrared_to_visible",
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Query and gallery of the LLCM test split: every listed image of each side, in list order.

    Raises:
        FileNotFoundError: Missing root or list file.
        ValueError: Unknown ``direction``.
    """
    if direction not in LLCM_DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(LLCM_DIRECTIONS)}, got {direction!r}")
    base = Path(root)
    _check(base, "test")
    query_modality, gallery_modality = LLCM_DIRECTIONS[direction]
    return (
        _llcm_modality(base, split="test", modality=query_modality),
        _llcm_modality(base, split="test", modality=gallery_modality),
    )
