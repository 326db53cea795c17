"""FAISS gallery index built from a factory string (house-style §24, architecture.md contract 5)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

import faiss
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

#: Default factory: exact search, SQL ids kept by IDMap2 (which can also reconstruct vectors).
DEFAULT_FACTORY: Final = "IDMap2,Flat"
_FAISS_METRICS: Final = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
# Extra neighbours fetched beyond k so that ties at the cut-off can be ordered by id.
_TIE_MARGIN: Final = 8


class FaissGalleryIndex:
    """FAISS index keyed by SQL ids, with the :class:`~vireid.index.GalleryIndex` ordering.

    The index is ``faiss.index_factory(dim, factory, metric)``. The factory must start with ``IDMap``
    or ``IDMap2`` so that vectors carry their SQL ids (house-style §25). FAISS breaks ties between
    equal scores in no fixed order; this class fetches past the ``k``-th result until the tie group at
    the cut-off is complete and re-sorts, so results equal :class:`~vireid.index.NumpyGalleryIndex`
    exactly (descending score, then ascending id). Factories that need training (``IVF``, ``PQ``) are
    trained on the first batch added. Not thread-safe; :class:`~vireid.index.IndexStore` adds locks.

    Args:
        dim: embedding width ``D`` (>= 1).
        factory: FAISS factory string, e.g. ``"IDMap2,Flat"`` (exact) or ``"IDMap,HNSW32"``.
        metric: ``"ip"`` (inner product, cosine on normalised vectors) or ``"l2"`` (scores are negated
            squared Euclidean distances).

    Raises:
        ValueError: for a bad ``dim``, ``metric`` or ``factory``.
    """

    def __init__(self, dim: int, *, factory: str = DEFAULT_FACTORY, metric: str = "ip") -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        check_metric(metric)
        if not isinstance(factory, str) or not factory.startswith("IDMap"):
            raise ValueError(
                f"factory must start with 'IDMap' or 'IDMap2' so SQL ids can be stored, got {factory!r}"
            )
        try:
            index = faiss.index_factory(int(dim), factory, _FAISS_METRICS[metric])
        except RuntimeError as exc:
            raise ValueError(f"FAISS cannot build factory {factory!r} for dim {dim}: {exc}") from exc
        self._init_from(index, factory=factory)

    def _init_from(self, index: Any, *, factory: str) -> None:
        self._index = index
        self._factory = factory
        self._metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        self._ids_cache: npt.NDArray[np.int64] | None = None

    @classmethod
    def from_faiss(cls, index: Any, *, factory: str) -> FaissGalleryIndex:
        """Wrap an existing FAISS ``IndexIDMap``/``IndexIDMap2``.

        Raises:
            CorruptIndexError: if ``index`` is not an id-mapped index with a supported metric.
        """
        if not isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            raise CorruptIndexError(f"expected an IndexIDMap/IndexIDMap2, got {type(index).__name__}")
        if index.metric_type not in _FAISS_METRICS.values():
            raise CorruptIndexError(f"unsupported FAISS metric type {index.metric_type}")
        self = cls.__new__(cls)
        self._init_from(index, factory=factory)
        return self

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return int(self._index.d)

    @property
    def metric(self) -> str:
        """``"ip"`` or ``"l2"``."""
        return self._metric

    @property
    def factory(self) -> str:
        """The FAISS factory string this index was built from."""
        return self._factory

    @property
    def faiss_index(self) -> Any:
        """The wrapped FAISS index (for tuning, e.g. ``nprobe``); do not add or remove through it."""
        return self._index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return (
            f"FaissGalleryIndex(dim={self.dim}, factory={self._factory!r}, metric={self._metric!r}, "
            f"ntotal={len(self)})"
        )

    def ids(self) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids, ascending."""
        if self._ids_cache is None:
            self._ids_cache = np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))
        return self._ids_cache.copy()

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        """Add ``(N,)`` ids with their ``(N, D)`` float32 vectors.

        An untrained index (IVF, PQ) is first trained on these vectors.

        Raises:
            ValueError: on a bad shape or dtype, a non-finite value, a length mismatch, an id that is
                repeated or already present, or a failed training. Nothing is added then.
        """
        new_ids, new_vectors = check_new_entries(ids, vectors, dim=self.dim, existing=self.ids())
        if new_ids.size == 0:
            return
        if not self._index.is_trained:
            try:
                self._index.train(new_vectors)
            except RuntimeError as exc:
                raise ValueError(
                    f"cannot train {self._factory!r} on {new_vectors.shape[0]} vectors: {exc}"
                ) from exc
        self._index.add_with_ids(new_vectors, new_ids)
        self._ids_cache = None

    def search(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        allowed_ids: npt.ArrayLike | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Search with the shared ordering; see :meth:`GalleryIndex.search`.

        Args:
            vectors: ``(Q, D)`` float32 queries.
            k: results per query (>= 1).
            allowed_ids: optional ``(M,)`` ids that may be returned, applied inside FAISS with an
                ``IDSelectorBatch``.

        Returns:
            ``(scores (Q, k) float32, ids (Q, k) int64)``, ``-1`` / ``-inf`` padded.

        Raises:
            ValueError: on bad queries, ``k`` or ``allowed_ids``.
        """
        queries = as_vectors(vectors, dim=self.dim)
        k = check_k(k)
        params = None
        n_candidates = len(self)
        selector = None
        if allowed_ids is not None:
            allowed = np.intersect1d(as_ids(allowed_ids, name="allowed_ids"), self.ids())
            n_candidates = int(allowed.size)
            selector = faiss.IDSelectorBatch(allowed)
            params = faiss.SearchParameters()
            params.sel = selector
        if n_candidates == 0 or queries.shape[0] == 0:
            return rank_results(
                np.zeros((queries.shape[0], 0), np.float32), np.zeros((queries.shape[0], 0), np.int64), k=k
            )
        result = self._search_with_ties(queries, k, n_candidates=n_candidates, params=params)
        del selector  # kept alive until FAISS is done with it
        return result

    def _search_with_ties(
        self, queries: npt.NDArray[np.float32], k: int, *, n_candidates: int, params: Any
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Fetch more than ``k`` neighbours until each row's tie group at the cut-off is complete."""
        nq = queries.shape[0]
        out_scores = np.empty((nq, k), dtype=np.float32)
        out_ids = np.empty((nq, k), dtype=np.int64)
        cut = min(k, n_candidates)
        fetch = min(n_candidates, cut + _TIE_MARGIN)
        pending = np.arange(nq)
        while pending.size:
            dist, found = self._index.search(queries[pending], fetch, params=params)
            scores = (dist if self._metric == "ip" else -dist).astype(np.float32)
            if fetch >= n_candidates:
                done = np.ones(pending.size, dtype=bool)
            else:
                done = (found[:, -1] < 0) | (scores[:, -1] != scores[:, cut - 1])
            ranked_scores, ranked_ids = rank_results(scores[done], found[done].astype(np.int64), k=k)
            out_scores[pending[done]] = ranked_scores
            out_ids[pending[done]] = ranked_ids
            pending = pending[~done]
            fetch = min(n_candidates, fetch * 2)
        return out_scores, out_ids

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``(M,)`` ids; unknown ids are ignored. Returns how many were removed."""
        to_remove = np.unique(as_ids(ids))
        if to_remove.size == 0 or len(self) == 0:
            return 0
        removed = int(self._index.remove_ids(faiss.IDSelectorBatch(to_remove)))
        self._ids_cache = None
        return removed

    def serialize(self) -> bytes:
        """The index as FAISS serialisation bytes (what :meth:`save` writes)."""
        return bytes(faiss.serialize_index(self._index))

    @classmethod
    def deserialize(cls, data: bytes, *, factory: str) -> FaissGalleryIndex:
        """Rebuild an index from :meth:`serialize` bytes.

        Raises:
            CorruptIndexError: if the bytes are not a valid id-mapped FAISS index.
        """
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise CorruptIndexError(f"cannot parse FAISS index: {exc}") from exc
        return cls.from_faiss(index, factory=factory)

    def save(self, path: str | Path) -> None:
        """Write the FAISS index to ``path`` atomically (temp file, fsync, rename)."""
        atomic_write_bytes(path, self.serialize())

    @classmethod
    def load(cls, path: str | Path, *, factory: str | None = None) -> FaissGalleryIndex:
        """Read a file written by :meth:`save`.

        Args:
            path: the ``.faiss`` file.
            factory: the factory string it was built from; when ``None`` it is recovered with
                ``faiss.contrib.factory_tools.reverse_index_factory`` where FAISS can.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            CorruptIndexError: if the file cannot be parsed.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no index file at {path}")
        try:
            index = cls.deserialize(path.read_bytes(), factory=factory or "")
        except CorruptIndexError as exc:
            raise CorruptIndexError(f"{path}: {exc}") from exc
        if factory is None:
            index._factory = _reverse_factory(index.faiss_index)
        return index


def _reverse_factory(index: Any) -> str:
    """Best-effort factory string of a loaded FAISS index (``"unknown"`` when FAISS cannot tell)."""
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        return str(reverse_index_factory(index))  # type: ignore[no-untyped-call]
    except NotImplementedError:
        logger.warning("cannot recover the factory string of a %s", type(index).__name__)
        return "unknown"
