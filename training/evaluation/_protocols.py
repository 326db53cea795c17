"""Benchmark protocols (methods.md §C, §A.6, §B.6, §D item 14): which queries meet which gallery, per trial.

* SYSU-MM01 (§C.1): infrared queries (cams 3, 6) against a single-shot visible gallery resampled for each
  trial ``t`` (``vireid.training.data.sysu_mm01_test(root, mode=..., trial=t)``), modes ``all``/``indoor``.
  Query features are extracted once; every gallery image is embedded once across all trials.
* RegDB (§C.2): for split ``t`` the test visible set against the test thermal set, both directions. The
  paper protocol averages ten splits, each with the model trained on that split (see :func:`merge_results`).
* LLCM: both directions (visible→infrared and infrared→visible). Queries are all test images of one
  modality; the gallery is single-shot (one image per identity and camera, ``random.Random(trial)``,
  identities and cameras ascending, ``choice(sorted(paths))``) as in the LLCM authors' test code; gallery
  items with the query's identity and camera are removed, CMC deduplicated (:func:`evaluate_llcm`).

Distances are ``-(q · gᵀ)`` on flip-averaged unit embeddings (§B.6); an optional ``postprocess`` callable
``(q_feats, g_feats) -> distmat`` (SALCR test-time CMFP, §A.6) is evaluated and reported separately.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vireid.training.evaluation._features import (
    DEFAULT_BATCH_SIZE,
    FeatureStore,
    RecordLike,
    negative_dot_distance,
)
from vireid.training.evaluation._metrics import (
    RankResult,
    evaluate_llcm,
    evaluate_rank,
    evaluate_regdb,
    evaluate_sysu,
    mean_results,
    same_camera_mask,
    sysu_camera_mask,
)

__all__ = [
    "DATASETS",
    "LLCM_DIRECTIONS",
    "REGDB_DIRECTIONS",
    "SYSU_MODES",
    "EvalSetting",
    "Postprocess",
    "camera_number",
    "llcm_settings",
    "regdb_settings",
    "single_shot_gallery",
    "sysu_settings",
]

logger = logging.getLogger(__name__)

DATASETS = ("sysu", "regdb", "llcm")
SYSU_MODES = ("all", "indoor")
#: Cross-modality directions, setting name → (query modality, gallery modality); names as in
#: ``vireid.training.data.regdb_test`` / ``llcm_test``.
REGDB_DIRECTIONS: dict[str, tuple[str, str]] = {
    "visible_to_thermal": ("visible", "infrared"),
    "thermal_to_visible": ("infrared", "visible"),
}
LLCM_DIRECTIONS: dict[str, tuple[str, str]] = {
    "visible_to_infrared": ("visible", "infrared"),
    "infrared_to_visible": ("infrared", "visible"),
}
#: SYSU queries are infrared, the gallery visible (§C.1).
SYSU_QUERY_MODALITY, SYSU_GALLERY_MODALITY = "infrared", "visible"

Postprocess = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvalSetting:
    """One ranking to evaluate: a query set against a gallery set for one setting and trial.

    Attributes:
        name: setting name (``"all"``, ``"indoor"``, ``"visible_to_infrared"``, ...).
        trial: gallery trial (SYSU/LLCM, 0-based) or RegDB split number (1..10).
        query, gallery: records (Contract 8) with identities.
        query_modality, gallery_modality: ``"visible"`` or ``"infrared"``.
    """

    name: str
    trial: int
    query: tuple[RecordLike, ...]
    gallery: tuple[RecordLike, ...]
    query_modality: str
    gallery_modality: str


def camera_number(camera: str | int) -> int:
    """Camera number from a camera name: the last integer in it (``"cam3"`` → 3, ``"3"`` → 3).

    Raises:
        ValueError: the name holds no digits.
    """
    if isinstance(camera, (int, np.integer)):
        return int(camera)
    found = re.findall(r"\d+", str(camera))
    if not found:
        raise ValueError(f"camera name {camera!r} holds no camera number")
    return int(found[-1])


def record_pids(records: Sequence[RecordLike]) -> np.ndarray:
    """(N,) int64 identities of ``records``; raises ValueError when any record has no identity."""
    missing = [str(r.path) for r in records if r.pid is None]
    if missing:
        raise ValueError(f"{len(missing)} records have no identity (pid), e.g. {missing[0]}")
    return np.asarray([int(r.pid) for r in records], dtype=np.int64)  # type: ignore[arg-type]


def single_shot_gallery(records: Sequence[RecordLike], *, trial: int) -> list[RecordLike]:
    """One random image per (identity, camera): ``random.Random(trial)``, identities then cameras ascending,
    ``choice`` over the paths sorted (the SYSU/LLCM single-shot gallery rule, §C.1).

    Args:
        records: candidate gallery records with identities.
        trial: seed of the draw.

    Returns:
        The drawn records, in draw order.
    """
    groups: dict[tuple[int, int], list[RecordLike]] = {}
    for record in records:
        groups.setdefault((int(record_pids([record])[0]), camera_number(record.camera)), []).append(record)
    rng = random.Random(trial)
    return [
        rng.choice(sorted(groups[key], key=lambda r: str(r.path)))
        for key in sorted(groups)  # pid first, then camera number: both ascending
    ]


def sysu_settings(root: str | Path, *, modes: Sequence[str], trials: Sequence[int]) -> list[EvalSetting]:
    """SYSU-MM01 settings: for each mode and trial, all test IR queries vs that trial's visible gallery.

    Raises:
        ValueError: an unknown mode. FileNotFoundError: from the reader when the layout is missing.
    """
    from vireid.training.data import sysu_mm01_test

    bad = [m for m in modes if m not in SYSU_MODES]
    if bad:
        raise ValueError(f"unknown SYSU mode(s) {bad}; valid: {list(SYSU_MODES)}")
    settings = []
    for mode in modes:
        for trial in trials:
            query, gallery = sysu_mm01_test(root, mode=mode, trial=trial)  # type: ignore[arg-type]
            settings.append(
                EvalSetting(
                    mode, trial, tuple(query), tuple(gallery), SYSU_QUERY_MODALITY, SYSU_GALLERY_MODALITY
                )
            )
    return settings


def regdb_settings(root: str | Path, *, splits: Sequence[int]) -> list[EvalSetting]:
    """RegDB settings (§C.2): for each split, visible→thermal and thermal→visible over the whole test split,
    in list-file order (``vireid.training.data.regdb_test``).

    Raises:
        ValueError: a split outside 1..10. FileNotFoundError: missing list files.
    """
    from vireid.training.data import regdb_test

    settings = []
    for split in splits:
        for name, (q_mod, g_mod) in REGDB_DIRECTIONS.items():
            query, gallery = regdb_test(root, trial=split, direction=name)  # type: ignore[arg-type]
            settings.append(EvalSetting(name, split, tuple(query), tuple(gallery), q_mod, g_mod))
    return settings


def llcm_settings(root: str | Path, *, trials: Sequence[int]) -> list[EvalSetting]:
    """LLCM settings: both directions; all query-modality test images vs a single-shot gallery per trial
    (:func:`single_shot_gallery` over ``vireid.training.data.llcm_test``'s gallery side)."""
    from vireid.training.data import llcm_test

    settings = []
    for name, (q_mod, g_mod) in LLCM_DIRECTIONS.items():
        query, pool = llcm_test(root, direction=name)  # type: ignore[arg-type]
        for trial in trials:
            gallery = tuple(single_shot_gallery(pool, trial=trial))
            settings.append(EvalSetting(name, trial, tuple(query), gallery, q_mod, g_mod))
    return settings


def exclusion_mask(dataset: str, setting: EvalSetting) -> np.ndarray | None:
    """The dataset's camera filter as a (Q, G) bool mask (None for RegDB, whose filter is a no-op)."""
    if dataset == "regdb":
        return None
    q_cams = np.asarray([camera_number(r.camera) for r in setting.query])
    g_cams = np.asarray([camera_number(r.camera) for r in setting.gallery])
    if dataset == "sysu":
        return sysu_camera_mask(q_cams, g_cams)
    return same_camera_mask(record_pids(setting.query), record_pids(setting.gallery), q_cams, g_cams)


def score_setting(dataset: str, setting: EvalSetting, distmat: np.ndarray, *, max_rank: int) -> RankResult:
    """Apply the dataset's metric function (:func:`evaluate_sysu` / ``_regdb`` / ``_llcm``) to a distmat."""
    q_pids, g_pids = record_pids(setting.query), record_pids(setting.gallery)
    if dataset == "regdb":
        return evaluate_regdb(distmat, q_pids, g_pids, max_rank=max_rank)
    q_cams = np.asarray([camera_number(r.camera) for r in setting.query])
    g_cams = np.asarray([camera_number(r.camera) for r in setting.gallery])
    metric = evaluate_sysu if dataset == "sysu" else evaluate_llcm
    return metric(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)


def summarise(per_setting: Mapping[str, Sequence[tuple[int, RankResult]]]) -> dict[str, Any]:
    """``{setting: {"mean": RankResult dict, "trials": [{"trial": t, ...}, ...]}}`` (JSON-ready)."""
    return {
        name: {
            "mean": mean_results([r for _, r in runs]).to_dict(),
            "trials": [{"trial": t, **r.to_dict()} for t, r in runs],
        }
        for name, runs in per_setting.items()
    }


def run_settings(
    store: FeatureStore,
    settings: Sequence[EvalSetting],
    *,
    dataset: str,
    max_rank: int,
    postprocess: Postprocess | None = None,
) -> tuple[dict[str, list[tuple[int, RankResult]]], dict[str, list[tuple[int, RankResult]]], float]:
    """Embed (cached) and score every setting; returns (plain, postprocessed, metric seconds)."""
    for modality in ("visible", "infrared"):
        store.prefetch([r for s in settings if s.query_modality == modality for r in s.query], modality)
        store.prefetch([r for s in settings if s.gallery_modality == modality for r in s.gallery], modality)
    plain: dict[str, list[tuple[int, RankResult]]] = {}
    post: dict[str, list[tuple[int, RankResult]]] = {}
    metric_s = 0.0
    for s in settings:
        q_feats = store.get(s.query, s.query_modality)
        g_feats = store.get(s.gallery, s.gallery_modality)
        start = time.perf_counter()
        distmat = negative_dot_distance(q_feats, g_feats)
        plain.setdefault(s.name, []).append((s.trial, score_setting(dataset, s, distmat, max_rank=max_rank)))
        if postprocess is not None:
            post_dist = np.asarray(postprocess(q_feats, g_feats))
            post.setdefault(s.name, []).append(
                (s.trial, score_setting(dataset, s, post_dist, max_rank=max_rank))
            )
        metric_s += time.perf_counter() - start
    return plain, post, metric_s


def cross_modality_result(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    query: Sequence[RecordLike],
    gallery: Sequence[RecordLike],
    *,
    max_rank: int,
) -> RankResult:
    """Standard CMC/mAP/mINP with the generic same-identity-same-camera filter (camera names compared)."""
    distmat = negative_dot_distance(q_feats, g_feats)
    exclude = cross_modality_mask(query, gallery)
    return evaluate_rank(
        distmat, record_pids(query), record_pids(gallery), max_rank=max_rank, exclude=exclude
    )


def cross_modality_mask(query: Sequence[RecordLike], gallery: Sequence[RecordLike]) -> np.ndarray:
    """(Q, G) bool: gallery items with the query's identity and the same camera *name* (generic rule)."""
    return same_camera_mask(
        record_pids(query),
        record_pids(gallery),
        np.asarray([str(r.camera) for r in query]),
        np.asarray([str(r.camera) for r in gallery]),
    )


def make_store(
    model: nn.Module,
    *,
    transform: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    flip: bool = True,
    num_workers: int = 0,
) -> FeatureStore:
    """A :class:`FeatureStore` with the given extraction options."""
    return FeatureStore(
        model, transform=transform, batch_size=batch_size, device=device, flip=flip, num_workers=num_workers
    )
