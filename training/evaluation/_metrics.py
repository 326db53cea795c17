"""Ranking metrics for cross-modality re-identification: CMC, mAP and mINP (methods.md §C).

Pure NumPy, no torch. One vectorised core (:func:`evaluate_rank`) serves every protocol:

* :func:`evaluate_sysu` — SYSU-MM01 (§C.1): cam-3 queries never see cam-2 gallery images, and the CMC is
  identity-deduplicated (each gallery identity counts once, at its first occurrence in the ranking).
* :func:`evaluate_regdb` — RegDB (§C.2): no camera filter, standard CMC.
* :func:`evaluate_llcm` — LLCM: gallery images of the query's identity *and* camera are removed, and the CMC
  is identity-deduplicated, as in the LLCM authors' evaluation.

Definitions shared by all (methods.md §C.1), for one query over its filtered ranked list:

* ``AP = Σ_k P@k · rel_k / #rel``; ``INP = #rel / (1 + index of the last positive)``;
* queries with no positive are *invalid*: they are skipped by mAP/mINP, add zeros to the CMC, and the CMC
  counts are divided by the number of valid queries.

The ranking is ``np.argsort(distmat, axis=1)`` (NumPy's default sort, as in the field's reference code),
so ties are broken exactly as the reference does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "RankResult",
    "evaluate_llcm",
    "evaluate_rank",
    "evaluate_regdb",
    "evaluate_sysu",
    "mean_results",
    "ranked_gallery",
    "same_camera_mask",
    "sysu_camera_mask",
]

logger = logging.getLogger(__name__)

#: Queries ranked per vectorised block; bounds peak memory to a few (chunk, G) arrays.
DEFAULT_CHUNK_SIZE = 1024
#: SYSU-MM01: queries from this (infrared) camera ...
SYSU_FILTER_QUERY_CAMERA = 3
#: ... never see gallery images from this (visible) camera, which views the same place (§C.1).
SYSU_FILTER_GALLERY_CAMERA = 2


@dataclass(frozen=True, eq=False)
class RankResult:
    """Result of one ranking evaluation (all values are fractions in [0, 1], not percentages).

    Attributes:
        cmc: (max_rank,) float64 cumulative match characteristic; ``cmc[k - 1]`` is rank-k accuracy.
        mAP: mean average precision over valid queries.
        mINP: mean inverse negative penalty over valid queries.
        num_valid_queries: queries with at least one true match left in the gallery (for a mean over
            trials, the sum over the trials).
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int

    def __post_init__(self) -> None:
        cmc = np.array(self.cmc, dtype=np.float64).reshape(-1)
        if cmc.size == 0:
            raise ValueError("RankResult.cmc must not be empty")
        cmc.setflags(write=False)
        object.__setattr__(self, "cmc", cmc)
        object.__setattr__(self, "mAP", float(self.mAP))
        object.__setattr__(self, "mINP", float(self.mINP))
        object.__setattr__(self, "num_valid_queries", int(self.num_valid_queries))

    def rank(self, k: int) -> float:
        """Rank-k accuracy ``cmc[k - 1]``; raises ValueError when k is outside 1..len(cmc)."""
        if not 1 <= k <= self.cmc.size:
            raise ValueError(f"rank {k} outside 1..{self.cmc.size}")
        return float(self.cmc[k - 1])

    @property
    def r1(self) -> float:
        """Rank-1 accuracy."""
        return self.rank(1)

    @property
    def r5(self) -> float:
        """Rank-5 accuracy."""
        return self.rank(5)

    @property
    def r10(self) -> float:
        """Rank-10 accuracy."""
        return self.rank(10)

    @property
    def r20(self) -> float:
        """Rank-20 accuracy."""
        return self.rank(20)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``r1``/``r5``/``r10``/``r20`` (where the CMC is long enough), ``mAP``, ``mINP``,
        ``num_valid_queries`` and the full ``cmc`` list (fractions)."""
        out: dict[str, Any] = {f"r{k}": self.rank(k) for k in (1, 5, 10, 20) if k <= self.cmc.size}
        out.update(
            mAP=self.mAP,
            mINP=self.mINP,
            num_valid_queries=self.num_valid_queries,
            cmc=[float(v) for v in self.cmc],
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankResult:
        """Inverse of :meth:`to_dict`; raises KeyError when a field is missing."""
        return cls(
            cmc=np.asarray(data["cmc"], dtype=np.float64),
            mAP=data["mAP"],
            mINP=data["mINP"],
            num_valid_queries=data["num_valid_queries"],
        )


def mean_results(results: Sequence[RankResult]) -> RankResult:
    """Mean of each metric over trials (methods.md §C.1 "final numbers = mean over the 10 trials").

    Args:
        results: one result per trial; all CMCs must have the same length.

    Returns:
        The element-wise mean of ``cmc``, ``mAP`` and ``mINP``; ``num_valid_queries`` is the sum.

    Raises:
        ValueError: empty input or CMCs of different lengths.
    """
    if not results:
        raise ValueError("mean_results needs at least one result")
    lengths = {r.cmc.size for r in results}
    if len(lengths) != 1:
        raise ValueError(f"CMC lengths differ across results: {sorted(lengths)}")
    return RankResult(
        cmc=np.mean([r.cmc for r in results], axis=0),
        mAP=float(np.mean([r.mAP for r in results])),
        mINP=float(np.mean([r.mINP for r in results])),
        num_valid_queries=sum(r.num_valid_queries for r in results),
    )


def sysu_camera_mask(q_camids: np.ndarray, g_camids: np.ndarray) -> np.ndarray:
    """SYSU-MM01 exclusion mask: every cam-2 gallery image is removed for every cam-3 query (§C.1).

    Args:
        q_camids: (Q,) integer camera numbers of the queries (1..6).
        g_camids: (G,) integer camera numbers of the gallery.

    Returns:
        (Q, G) bool, True where the gallery item is excluded for that query, whatever its identity.
    """
    q = np.asarray(q_camids).reshape(-1)
    g = np.asarray(g_camids).reshape(-1)
    mask: np.ndarray = (q == SYSU_FILTER_QUERY_CAMERA)[:, None] & (g == SYSU_FILTER_GALLERY_CAMERA)[None, :]
    return mask


def same_camera_mask(
    q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
) -> np.ndarray:
    """Generic re-ID exclusion mask: gallery items with the query's identity *and* camera are removed.

    Args:
        q_pids: (Q,) query identities. g_pids: (G,) gallery identities.
        q_camids: (Q,) query cameras. g_camids: (G,) gallery cameras (any comparable dtype, e.g. int or str).

    Returns:
        (Q, G) bool, True where excluded.
    """
    same_pid = np.asarray(q_pids).reshape(-1)[:, None] == np.asarray(g_pids).reshape(-1)[None, :]
    same_cam = np.asarray(q_camids).reshape(-1)[:, None] == np.asarray(g_camids).reshape(-1)[None, :]
    mask: np.ndarray = same_pid & same_cam
    return mask


def _check_inputs(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, exclude: np.ndarray | None, max_rank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dist = np.asarray(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (Q, G), got shape {dist.shape}")
    q = np.asarray(q_pids).reshape(-1)
    g = np.asarray(g_pids).reshape(-1)
    if dist.shape != (q.size, g.size):
        raise ValueError(f"distmat shape {dist.shape} does not match {q.size} queries x {g.size} gallery")
    if q.size == 0 or g.size == 0:
        raise ValueError("empty query or gallery set")
    if not np.all(np.isfinite(dist)):
        raise ValueError("distmat contains NaN or infinite values")
    if exclude is not None and np.shape(exclude) != dist.shape:
        raise ValueError(f"exclude mask shape {np.shape(exclude)} != distmat shape {dist.shape}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    return dist, q, g


def _dedup_rank(
    order: np.ndarray,
    keep: np.ndarray,
    position: np.ndarray,
    first_hit: np.ndarray,
    groups: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """0-based rank of each query's first match in its identity-deduplicated filtered ranking.

    That rank is the number of distinct gallery identities whose first kept occurrence comes before the
    query's first kept match. ``groups`` = (gallery columns sorted by identity code, start index of each
    code's run in that order).
    """
    n_q, n_g = order.shape
    rows = np.arange(n_q)
    filtered = np.where(keep, position - 1, n_g).astype(np.int32)  # excluded items sort after the rest
    by_gallery = np.empty_like(filtered)
    np.put_along_axis(by_gallery, order, filtered, axis=1)
    by_code, starts = groups
    first_of_identity = np.minimum.reduceat(by_gallery[:, by_code], starts, axis=1)  # (C, identities)
    rank: np.ndarray = (first_of_identity < filtered[rows, first_hit][:, None]).sum(axis=1)
    return rank


def _rank_block(
    dist: np.ndarray,
    q_codes: np.ndarray,
    g_codes: np.ndarray,
    exclude: np.ndarray | None,
    *,
    groups: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-query (0-based first-match rank, AP, INP, valid flag) for one block of queries; ``groups`` given
    means identity-deduplicated CMC (see :func:`_dedup_rank`)."""
    order = np.argsort(dist, axis=1)
    ranked_codes = g_codes[order]
    keep = np.ones(order.shape, dtype=bool) if exclude is None else ~np.take_along_axis(exclude, order, 1)
    rel = (ranked_codes == q_codes[:, None]) & keep
    num_rel = rel.sum(axis=1)
    valid = num_rel > 0
    position = np.cumsum(keep, axis=1, dtype=np.int32)  # 1-based position in the filtered list, where kept
    hits = np.cumsum(rel, axis=1, dtype=np.int32)
    precision_at_hits = np.where(rel, hits / np.maximum(position, 1), 0.0)
    safe_rel = np.maximum(num_rel, 1)
    ap = precision_at_hits.sum(axis=1) / safe_rel
    rows = np.arange(order.shape[0])
    last_hit = order.shape[1] - 1 - np.argmax(rel[:, ::-1], axis=1)
    inp = num_rel / position[rows, last_hit]
    first_hit = np.argmax(rel, axis=1)
    if groups is not None:
        first_rank = _dedup_rank(order, keep, position, first_hit, groups)
    else:
        first_rank = position[rows, first_hit] - 1
    return first_rank, ap, inp, valid


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    *,
    max_rank: int = 20,
    exclude: np.ndarray | None = None,
    dedup_cmc: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> RankResult:
    """CMC, mAP and mINP of a query-by-gallery distance matrix (methods.md §C.1, §C.2).

    Args:
        distmat: (Q, G) float distances, smaller = more similar; must be finite.
        q_pids: (Q,) query identities. g_pids: (G,) gallery identities (any hashable, comparable dtype).
        max_rank: length of the returned CMC. Where a filtered list is shorter than ``max_rank`` the CMC
            stays at its last value (the reference code truncates the curve instead; the common prefix is
            identical).
        exclude: optional (Q, G) bool mask of gallery items removed from a query's ranking (camera filter).
        dedup_cmc: identity-deduplicated CMC (SYSU/LLCM code): only the first occurrence of each gallery
            identity in the filtered ranking counts towards the rank. mAP/mINP never deduplicate.
        chunk_size: queries ranked per vectorised block (memory bound only; results do not depend on it).

    Returns:
        A :class:`RankResult` with fractions.

    Raises:
        ValueError: bad shapes, non-finite distances, or no query has a match in its filtered gallery.
    """
    dist, q, g = _check_inputs(distmat, q_pids, g_pids, exclude, max_rank)
    codes = np.unique(np.concatenate([q, g]), return_inverse=True)[1].reshape(-1)
    q_codes, g_codes = codes[: q.size], codes[q.size :]
    groups = None
    if dedup_cmc:
        by_code = np.argsort(g_codes, kind="stable")
        sorted_codes = g_codes[by_code]
        groups = (by_code, np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]))
    mask = None if exclude is None else np.asarray(exclude, dtype=bool)
    ranks: list[np.ndarray] = []
    aps: list[np.ndarray] = []
    inps: list[np.ndarray] = []
    valids: list[np.ndarray] = []
    for start in range(0, q.size, max(1, chunk_size)):
        stop = start + max(1, chunk_size)
        block = _rank_block(
            dist[start:stop],
            q_codes[start:stop],
            g_codes,
            None if mask is None else mask[start:stop],
            groups=groups,
        )
        for acc, part in zip((ranks, aps, inps, valids), block, strict=True):
            acc.append(part)
    valid = np.concatenate(valids)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query identity appears in its (filtered) gallery: metrics are undefined")
    first_rank = np.concatenate(ranks)[valid]
    counts = np.bincount(np.minimum(first_rank, max_rank), minlength=max_rank + 1)[:max_rank]
    return RankResult(
        cmc=np.cumsum(counts) / num_valid,
        mAP=float(np.concatenate(aps)[valid].mean()),
        mINP=float(np.concatenate(inps)[valid].mean()),
        num_valid_queries=num_valid,
    )


def evaluate_sysu(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> RankResult:
    """SYSU-MM01 metrics (methods.md §C.1): cam-3 queries drop all cam-2 gallery images; deduplicated CMC.

    Args:
        distmat: (Q, G) float distances (smaller = closer).
        q_pids, g_pids: (Q,), (G,) identities.
        q_camids, g_camids: (Q,), (G,) integer camera numbers (1..6).
        max_rank: CMC length (rank-20 for the standard report).

    Returns:
        :class:`RankResult` (fractions). Raises ValueError as :func:`evaluate_rank`.
    """
    exclude = sysu_camera_mask(q_camids, g_camids)
    return evaluate_rank(distmat, q_pids, g_pids, max_rank=max_rank, exclude=exclude, dedup_cmc=True)


def evaluate_regdb(
    distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, max_rank: int = 20
) -> RankResult:
    """RegDB metrics (methods.md §C.2): every gallery image used, standard (not deduplicated) CMC.

    Args:
        distmat: (Q, G) float distances (smaller = closer).
        q_pids, g_pids: (Q,), (G,) identities.
        max_rank: CMC length.

    Returns:
        :class:`RankResult` (fractions). Raises ValueError as :func:`evaluate_rank`.
    """
    return evaluate_rank(distmat, q_pids, g_pids, max_rank=max_rank, dedup_cmc=False)


def evaluate_llcm(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
) -> RankResult:
    """LLCM metrics: gallery items sharing the query's identity and camera are removed; deduplicated CMC.

    This follows the LLCM authors' ``eval_llcm`` (a copy of the SYSU procedure with the generic
    same-identity-same-camera rule in place of SYSU's cam3/cam2 rule).

    Args:
        distmat: (Q, G) float distances (smaller = closer).
        q_pids, g_pids: (Q,), (G,) identities.
        q_camids, g_camids: (Q,), (G,) cameras (LLCM cameras carry both a visible and a NIR sensor).
        max_rank: CMC length.

    Returns:
        :class:`RankResult` (fractions). Raises ValueError as :func:`evaluate_rank`.
    """
    exclude = same_camera_mask(q_pids, g_pids, q_camids, g_camids)
    return evaluate_rank(distmat, q_pids, g_pids, max_rank=max_rank, exclude=exclude, dedup_cmc=True)


def ranked_gallery(distmat: np.ndarray, *, top_k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the top-k gallery items per query after removing excluded items (for rank lists).

    Args:
        distmat: (Q, G) float distances.
        top_k: number of gallery items to return per query.
        exclude: optional (Q, G) bool mask of removed items.

    Returns:
        (Q, top_k) int64 gallery indices, best first; -1 pads rows with fewer than top_k kept items.
    """
    dist = np.asarray(distmat)
    if dist.ndim != 2 or top_k < 1:
        raise ValueError(f"need a 2-D distmat and top_k >= 1, got shape {dist.shape}, top_k={top_k}")
    order = np.argsort(dist, axis=1)
    out = np.full((dist.shape[0], top_k), -1, dtype=np.int64)
    for i, row in enumerate(order):
        if exclude is not None:
            row = row[~np.asarray(exclude[i], dtype=bool)[row]]
        out[i, : min(top_k, row.size)] = row[:top_k]
    return out
