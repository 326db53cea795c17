"""Brute-force NumPy gallery index: the exact reference for FAISS and the test fake (house-style §24, §36)."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vireid.index._atomic import atomic_write_bytes
from vireid.index._protocol import CorruptIndexError
from vireid.index._validation import (
    as_ids,
    as_vectors,
    check_k,
    check_metric,
    check_new_entries,
    rank_results,
)

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def pairwise_scores(
    queries: npt.NDArray[np.float32], gallery: npt.NDArray[np.float32], *, metric: str
) -> npt.NDArray[np.float32]:
    """Scores between every query and every gallery vector (larger is better).

    Args:
        queries: ``(Q, D)`` float32.
        gallery: ``(N, D)`` float32.
        metric: ``"ip"`` for inner products, ``"l2"`` for negated squared Euclidean distances.

    Returns:
        ``(Q, N)`` float32.
    """
    dots: npt.NDArray[np.float32] = queries @ gallery.T
    if metric == "ip":
        return dots
    q2: npt.NDArray[np.float32] = np.einsum("ij,ij->i", queries, queries)[:, None]
    g2: npt.NDArray[np.float32] = np.einsum("ij,ij->i", gallery, gallery)[None, :]
    negated: npt.NDArray[np.float32] = (2.0 * dots - q2 - g2).astype(np.float32, copy=False)
    return negated


def top_k_exact(
    scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], *, k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Exact top-``k`` of a dense score matrix with the (score desc, id asc) tie-break.

    Only the candidates scoring at least the ``k``-th best score of their row are sorted, so all ties
    at the cut-off are seen and the smallest ids win.

    Args:
        scores: ``(Q, N)`` float32.
        ids: ``(N,)`` int64 ids of the columns.
        k: results per row.

    Returns:
        ``(scores (Q, k) float32, ids (Q, k) int64)``, ``-1`` padded when ``N < k``.
    """
    nq, n = scores.shape
    if n <= k:
        return rank_results(scores, np.broadcast_to(ids, (nq, n)).copy(), k=k)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    width = int((scores >= kth[:, None]).sum(axis=1).max())
    cols = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    return rank_results(np.take_along_axis(scores, cols, axis=1), ids[cols], k=k)


class NumpyGalleryIndex:
    """Exact brute-force index held in memory as a ``(N, D)`` float32 matrix.

    Follows :class:`~vireid.index.GalleryIndex`: descending score, then ascending id. Use it as the
    reference that :class:`~vireid.index.FaissGalleryIndex` is tested against and as the fake in API
    tests.

    Args:
        dim: embedding width ``D`` (>= 1).
        metric: ``"ip"`` (inner product) or ``"l2"`` (negated squared Euclidean distance).

    Raises:
        ValueError: for a bad ``dim`` or ``metric``.
    """

    def __init__(self, dim: int, *, metric: str = "ip") -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self._dim = int(dim)
        self._metric = check_metric(metric)
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, self._dim), dtype=np.float32)

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return self._dim

    @property
    def metric(self) -> str:
        """``"ip"`` or ``"l2"``."""
        return self._metric

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __repr__(self) -> str:
        return f"NumpyGalleryIndex(dim={self._dim}, metric={self._metric!r}, ntotal={len(self)})"

    def ids(self) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids, ascending."""
        return np.sort(self._ids)

    def vectors_for(self, ids: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Return the ``(M, D)`` float32 vectors of ``(M,)`` ids, in the given order.

        Raises:
            KeyError: if an id is not in the index.
        """
        wanted = as_ids(ids)
        order = np.argsort(self._ids)
        pos = np.searchsorted(self._ids, wanted, sorter=order)
        pos = np.minimum(pos, max(len(self) - 1, 0))
        if len(self) == 0 or not np.array_equal(self._ids[order[pos]], wanted):
            missing = np.setdiff1d(wanted, self._ids)
            raise KeyError(f"ids not in the index: {missing[:10].tolist()}")
        return self._vectors[order[pos]].copy()

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        """Add ``(N,)`` ids with their ``(N, D)`` float32 vectors.

        Raises:
            ValueError: on a bad shape or dtype, a non-finite value, a length mismatch, or an id that
                is repeated or already present. Nothing is added then.
        """
        new_ids, new_vectors = check_new_entries(ids, vectors, dim=self._dim, existing=self._ids)
        self._ids = np.concatenate([self._ids, new_ids])
        self._vectors = np.concatenate([self._vectors, new_vectors])

    def search(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        allowed_ids: npt.ArrayLike | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Exact search; see :meth:`GalleryIndex.search`.

        Args:
            vectors: ``(Q, D)`` float32 queries.
            k: results per query (>= 1).
            allowed_ids: optional ``(M,)`` ids that may be returned; others are skipped.

        Returns:
            ``(scores (Q, k) float32, ids (Q, k) int64)``, ``-1`` / ``-inf`` padded.

        Raises:
            ValueError: on bad queries, ``k`` or ``allowed_ids``.
        """
        queries = as_vectors(vectors, dim=self._dim)
        k = check_k(k)
        ids, gallery = self._ids, self._vectors
        if allowed_ids is not None:
            keep = np.isin(ids, as_ids(allowed_ids, name="allowed_ids"))
            ids, gallery = ids[keep], gallery[keep]
        scores = pairwise_scores(queries, gallery, metric=self._metric)
        return top_k_exact(scores, ids, k=k)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``(M,)`` ids; unknown ids are ignored. Returns how many were removed."""
        drop = np.isin(self._ids, as_ids(ids))
        removed = int(drop.sum())
        if removed:
            self._ids = self._ids[~drop]
            self._vectors = self._vectors[~drop]
        return removed

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` file (ids, vectors, metric) atomically to exactly ``path``."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format_version=np.array(_FORMAT_VERSION),
            metric=np.array(self._metric),
            ids=self._ids,
            vectors=self._vectors,
        )
        atomic_write_bytes(path, buffer.getbuffer())

    @classmethod
    def load(cls, path: str | Path) -> NumpyGalleryIndex:
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            CorruptIndexError: if the file is not a valid saved index.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no index file at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                fields: dict[str, Any] = {name: data[name] for name in ("metric", "ids", "vectors")}
            index = cls(int(fields["vectors"].shape[1]), metric=str(fields["metric"]))
            index.add(fields["ids"], fields["vectors"])
        except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
            raise CorruptIndexError(f"cannot read numpy index {path}: {exc}") from exc
        return index
