"""Identity samplers over pseudo-labels (methods.md §A.2, §B.2).

Every sampler takes label arrays (pseudo-labels, ``-1`` = outlier, never sampled) and a seeded
``numpy.random.Generator`` and returns dataset indices. The torch ``Sampler`` wrappers only feed those index
lists to a ``DataLoader``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


def _as_labels(labels: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {array.shape} dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def group_by_label(labels: Sequence[int] | np.ndarray) -> dict[int, np.ndarray]:
    """Label -> ascending (n,) int64 indices of that label; label ``-1`` (outliers) is left out."""
    array = _as_labels(labels, "labels")
    order = np.argsort(array, kind="stable")
    values, starts = np.unique(array[order], return_index=True)
    groups = np.split(order, starts[1:])
    return {int(v): np.sort(g) for v, g in zip(values, groups, strict=True) if v >= 0}


def _draw_members(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` members of ``pool``: without replacement if the pool has more than ``count``, else with."""
    return rng.choice(pool, size=count, replace=pool.size <= count)


def _draw_clusters(clusters: np.ndarray, count: int, rng: np.random.Generator, what: str) -> np.ndarray:
    if clusters.size == 0:
        raise ValueError(f"no {what} cluster to sample from (all labels are -1?)")
    if clusters.size < count:
        logger.debug("only %d %s clusters for %d slots: drawing with replacement", clusters.size, what, count)
    return rng.choice(clusters, size=count, replace=clusters.size < count)


def camera_aware_pk_indices(
    labels: Sequence[int] | np.ndarray,
    cameras: Sequence[Any] | np.ndarray,
    *,
    num_instances: int,
    rng: np.random.Generator,
) -> list[int]:
    """One pass of ``RandomMultipleGallerySampler`` (cluster-contrast / SDCL, methods.md §B.2).

    Visits every label once in random order: one random anchor, then ``num_instances - 1`` images of that
    label from cameras other than the anchor's (without replacement when there are at least
    ``num_instances`` of them, else with). With no other camera, ``num_instances - 1`` other images of the
    label instead (same rule); with no other image at all only the anchor is kept.

    Args:
        labels: (N,) int pseudo-labels; ``-1`` is never sampled.
        cameras: (N,) camera of each image (any hashable values).
        num_instances: Images per identity (K), >= 1.
        rng: Source of every random draw.

    Returns:
        Dataset indices; consecutive groups of ``num_instances`` share a label.
    """
    labels_arr = _as_labels(labels, "labels")
    cams = np.asarray(cameras)
    if cams.shape != labels_arr.shape:
        raise ValueError(f"labels and cameras differ in length: {labels_arr.shape} vs {cams.shape}")
    if num_instances < 1:
        raise ValueError(f"num_instances must be >= 1, got {num_instances}")
    groups = group_by_label(labels_arr)
    keys = sorted(groups)
    out: list[int] = []
    for position in rng.permutation(len(keys)):
        members = groups[keys[position]]
        anchor_pos = int(rng.integers(members.size))
        out.append(int(members[anchor_pos]))
        if num_instances == 1:
            continue
        candidates = np.flatnonzero(cams[members] != cams[members[anchor_pos]])
        if candidates.size == 0:
            candidates = np.delete(np.arange(members.size), anchor_pos)
        if candidates.size == 0:
            continue
        chosen = rng.choice(candidates, size=num_instances - 1, replace=candidates.size < num_instances)
        out.extend(int(i) for i in members[chosen])
    return out


class CameraAwarePKSampler(Sampler[int]):
    """torch ``Sampler`` giving a fresh :func:`camera_aware_pk_indices` pass on every ``iter()``.

    ``len()`` is ``num_labels * num_instances`` (as the reference sampler reports it); a pass can be shorter
    when a label has a single image.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        cameras: Sequence[Any] | np.ndarray,
        *,
        num_instances: int = 16,
        seed: int = 0,
    ) -> None:
        self.labels = _as_labels(labels, "labels")
        self.cameras = np.asarray(cameras)
        self.num_instances = num_instances
        self.rng = np.random.default_rng(seed)
        self._num_labels = len(group_by_label(self.labels))

    def __len__(self) -> int:
        return self._num_labels * self.num_instances

    def __iter__(self) -> Iterator[int]:
        return iter(
            camera_aware_pk_indices(self.labels, self.cameras, num_instances=self.num_instances, rng=self.rng)
        )


class IterLoader:
    """Endless iterator over a ``DataLoader`` (or any re-iterable) that restarts it when it runs out.

    ``len()`` is the fixed number of iterations per epoch (``length``, else the loader's length).
    """

    def __init__(self, loader: Iterable[Any], *, length: int | None = None) -> None:
        self.loader = loader
        self.length = length
        self._iterator: Iterator[Any] | None = None

    def __len__(self) -> int:
        if self.length is not None:
            return self.length
        return len(self.loader)  # type: ignore[arg-type]

    def new_epoch(self) -> None:
        """Start a fresh pass of the loader."""
        self._iterator = iter(self.loader)

    def __iter__(self) -> IterLoader:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self.new_epoch()
        assert self._iterator is not None
        try:
            return next(self._iterator)
        except StopIteration:
            self.new_epoch()
            try:
                return next(self._iterator)
            except StopIteration:
                raise RuntimeError("the wrapped loader yields no batch (empty dataset or sampler?)") from None

    def next(self) -> Any:
        """The next batch (restarting the loader when it is exhausted)."""
        return next(self)


def stage_one_indices(
    rgb_labels: Sequence[int] | np.ndarray,
    ir_labels: Sequence[int] | np.ndarray,
    *,
    num_iterations: int,
    rng: np.random.Generator,
    clusters_per_batch: int = 12,
    num_instances: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """SALCR stage-1 paired sampler (``StageOneSampler``, methods.md §A.2).

    Per iteration: ``clusters_per_batch`` visible and as many infrared clusters, drawn independently and
    without replacement (with replacement only if there are fewer clusters than slots), and
    ``num_instances`` images of each cluster (without replacement if the cluster has more, else with).
    Visible row k and infrared row k are *not* identity-paired.

    Returns:
        ``(rgb_index, ir_index)``: two (num_iterations · clusters_per_batch · num_instances,) int64 arrays;
        batch b is rows ``[b·B, (b+1)·B)`` with ``B = clusters_per_batch · num_instances``.
    """
    rgb_groups, ir_groups = group_by_label(rgb_labels), group_by_label(ir_labels)
    rgb_keys, ir_keys = (
        np.array(sorted(rgb_groups), dtype=np.int64),
        np.array(sorted(ir_groups), dtype=np.int64),
    )
    rgb_rows: list[np.ndarray] = []
    ir_rows: list[np.ndarray] = []
    for _ in range(num_iterations):
        for c in _draw_clusters(rgb_keys, clusters_per_batch, rng, "visible"):
            rgb_rows.append(_draw_members(rgb_groups[int(c)], num_instances, rng))
        for c in _draw_clusters(ir_keys, clusters_per_batch, rng, "infrared"):
            ir_rows.append(_draw_members(ir_groups[int(c)], num_instances, rng))
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(rgb_rows) if rgb_rows else empty, np.concatenate(ir_rows) if ir_rows else empty)


def eligible_anchors(
    labels: Sequence[int] | np.ndarray, cross_labels_of_other: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Clusters of ``labels`` that are also the cross label of at least one image of the other modality."""
    own = set(group_by_label(labels))
    other = set(group_by_label(cross_labels_of_other))
    return np.array(sorted(own & other), dtype=np.int64)


def _anchor_counts(num_rgb: int, num_ir: int, anchors_per_modality: int) -> dict[str, int]:
    """Anchors per batch on each side: half each, or all on one side when the other has none eligible."""
    if num_rgb == 0 and num_ir == 0:
        raise ValueError("no cluster has a cross-modality partner: stage-2 sampling is impossible")
    if num_rgb and num_ir:
        return {"visible": anchors_per_modality, "infrared": anchors_per_modality}
    logger.warning("one modality has no eligible anchor; drawing all anchors from the other")
    return {
        "visible": 2 * anchors_per_modality * int(num_rgb > 0),
        "infrared": 2 * anchors_per_modality * int(num_ir > 0),
    }


def stage_two_indices(
    rgb_labels: Sequence[int] | np.ndarray,
    ir_labels: Sequence[int] | np.ndarray,
    *,
    rgb_cross: Sequence[int] | np.ndarray,
    ir_cross: Sequence[int] | np.ndarray,
    num_iterations: int,
    rng: np.random.Generator,
    anchors_per_modality: int = 6,
    num_instances: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """SALCR stage-2 paired cross-modality sampler (``StageThreeSampler``, methods.md §A.2).

    Eligible visible anchors are visible clusters that are the IR->RGB cross label of some infrared image;
    eligible infrared anchors likewise. Per iteration, ``anchors_per_modality`` anchors of each kind (without
    replacement unless there are too few); for a visible anchor c, ``num_instances`` visible images labelled
    c and as many infrared images whose cross label is c; for an infrared anchor, the mirror. Row k of the
    two returned arrays is therefore a pseudo-positive cross-modality pair (rows of V, A and R in a batch).
    If one side has no eligible anchor, all anchors come from the other side.

    Args:
        rgb_labels: (N_v,) visible pseudo-labels (``-1`` = outlier).
        ir_labels: (N_r,) infrared pseudo-labels.
        rgb_cross: (N_v,) RGB->IR cross labels (an infrared cluster per visible image, ``-1`` = none).
        ir_cross: (N_r,) IR->RGB cross labels (a visible cluster per infrared image, ``-1`` = none).
        num_iterations: Batches to produce.
        rng: Source of every random draw.
        anchors_per_modality: Anchors of each kind per batch.
        num_instances: Rows per anchor.

    Returns:
        ``(rgb_index, ir_index)`` int64 arrays of length
        ``num_iterations · 2 · anchors_per_modality · num_instances``.

    Raises:
        ValueError: Mismatched lengths, or no eligible anchor on either side.
    """
    if len(rgb_cross) != len(rgb_labels) or len(ir_cross) != len(ir_labels):
        raise ValueError("each cross-label array must have the length of its modality's labels")
    rgb_own, ir_own = group_by_label(rgb_labels), group_by_label(ir_labels)
    rgb_by_cross, ir_by_cross = group_by_label(rgb_cross), group_by_label(ir_cross)
    rgb_anchors, ir_anchors = eligible_anchors(rgb_labels, ir_cross), eligible_anchors(ir_labels, rgb_cross)
    per_side = _anchor_counts(rgb_anchors.size, ir_anchors.size, anchors_per_modality)
    sides = [
        (rgb_anchors, per_side["visible"], rgb_own, ir_by_cross, "eligible visible"),
        (ir_anchors, per_side["infrared"], rgb_by_cross, ir_own, "eligible infrared"),
    ]
    rgb_rows: list[np.ndarray] = []
    ir_rows: list[np.ndarray] = []
    for _ in range(num_iterations):
        for anchors, count, rgb_pools, ir_pools, what in sides:
            if count == 0:
                continue
            for c in _draw_clusters(anchors, count, rng, what):
                rgb_rows.append(_draw_members(rgb_pools[int(c)], num_instances, rng))
                ir_rows.append(_draw_members(ir_pools[int(c)], num_instances, rng))
    return np.concatenate(rgb_rows), np.concatenate(ir_rows)


class PairedSampler(Sampler[tuple[int, int]]):
    """Yield ``(rgb_index, ir_index)`` pairs in order, for ``DataLoader(batch_size=B, drop_last=True)``."""

    def __init__(self, rgb_index: Sequence[int] | np.ndarray, ir_index: Sequence[int] | np.ndarray) -> None:
        self.rgb_index = np.asarray(rgb_index, dtype=np.int64)
        self.ir_index = np.asarray(ir_index, dtype=np.int64)
        if self.rgb_index.shape != self.ir_index.shape:
            raise ValueError(f"index arrays differ in shape: {self.rgb_index.shape} vs {self.ir_index.shape}")

    def __len__(self) -> int:
        return int(self.rgb_index.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self.rgb_index.tolist(), self.ir_index.tolist(), strict=True))
