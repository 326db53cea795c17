"""FAISS gallery index built from a factory string (house-style §24, architecture.md contract 5)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import faiss
import numpy as np
import numpy.typing as npt

from vireid.index._atomic import atomic_write_bytes
from vireid.index._gpu import GpuCopy, gpu_supports
from vireid.index._protocol import CorruptIndexError
from vireid.index._training import (
    DEFAULT_RETRAIN_FACTOR,
    DEFAULT_TRAIN_BYTES,
    EXACT_FACTORY,
    TrainingNeeds,
    reservoir_sample,
    training_needs,
)
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
DEFAULT_FACTORY: Final = EXACT_FACTORY
_FAISS_METRICS: Final = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
# Extra neighbours fetched beyond k so that ties at the cut-off can be ordered by id.
_TIE_MARGIN: Final = 8
# Labels of removed vectors in an index that cannot remove (HNSW) are rewritten to -2: never a valid
# id, never the -1 that FAISS uses for an empty slot (IDMap2's reverse map only serves reconstruct).
_TOMBSTONE: Final = -2
# Tombstones beyond this share of the stored vectors make the index ask to be rebuilt (compacted).
_MAX_TOMBSTONE_SHARE: Final = 0.2
# How much nprobe / efSearch grow when a search came back with fewer than k results.
_ESCALATION: Final = 4
_ALL_IDS: Final = (0, np.iinfo(np.int64).max)
_HNSW_PARAMETERS: Any = faiss.SearchParametersHNSW  # type: ignore[attr-defined]  # not in faiss's stubs

Batches = Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]


class FaissGalleryIndex:
    """FAISS index keyed by SQL ids, with the :class:`~vireid.index.GalleryIndex` ordering.

    The index is ``faiss.index_factory(dim, factory, metric)``. The factory must start with ``IDMap``
    or ``IDMap2`` so that vectors carry their SQL ids (house-style §25). FAISS breaks ties between
    equal scores in no fixed order; this class fetches past the ``k``-th result until the tie group at
    the cut-off is complete and re-sorts, so exact results equal
    :class:`~vireid.index.NumpyGalleryIndex` (descending score, then ascending id).

    **Factories that need training** (``IVF``, ``PQ``; see :mod:`vireid.index._training`): a new index
    is exact (``IDMap2,Flat``) until :meth:`build_reason` says it holds enough vectors; the owner then
    builds the trained index with :meth:`build` from every stored vector (trained on a reservoir
    sample) and swaps it in. :attr:`factory` is always the configured factory and
    :attr:`built_factory` the one FAISS holds now.

    **Approximate search** takes ``nprobe`` (IVF lists probed) and ``ef_search`` (HNSW beam, also of
    an ``IVF..._HNSW`` coarse quantiser) per call, defaulting to the values given at construction. A
    search that comes back with fewer than ``min(k, candidates)`` results (a filter whose items sit
    in unprobed lists, an HNSW beam that missed them) is repeated with ``nprobe`` / ``efSearch``
    multiplied by 4 until it is complete or everything is scanned, so filters keep returning ``k``
    results when ``k`` items pass them.

    **Removal** is FAISS's ``remove_ids`` only where the index below the id map renumbers its
    vectors contiguously (flat-code indexes: Flat, PQ, SQ). Elsewhere it rewrites the removed ids'
    labels to tombstones that no search returns, and :meth:`build_reason` asks for a rebuild once they
    exceed 20%: HNSW cannot remove at all, and ``IndexIDMap`` over IVF removes the wrong labels
    (FAISS 1.15: after ``remove_ids`` the id map is compacted but the IVF lists keep their old
    internal numbers, so later searches return other ids; tests/index/test_faiss_index.py shows it).

    Not thread-safe; :class:`~vireid.index.IndexStore` adds locks.

    Args:
        dim: embedding width ``D`` (>= 1).
        factory: FAISS factory string, e.g. ``"IDMap2,Flat"`` (exact), ``"IDMap2,HNSW32"`` or
            ``"IDMap2,IVF4096,Flat"``.
        metric: ``"ip"`` (inner product, cosine on normalised vectors) or ``"l2"`` (scores are negated
            squared Euclidean distances).
        nprobe: default IVF lists probed per query (None: FAISS's default, 1).
        ef_search: default HNSW search beam (None: FAISS's default, 16).
        max_train_bytes: memory cap of the training sample (float32 bytes).

    Raises:
        ValueError: for a bad ``dim``, ``metric``, ``factory``, ``nprobe`` or ``ef_search``.
    """

    _needs: TrainingNeeds | None

    def __init__(
        self,
        dim: int,
        *,
        factory: str = DEFAULT_FACTORY,
        metric: str = "ip",
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: float | None = None,
        max_train_bytes: int = DEFAULT_TRAIN_BYTES,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        check_metric(metric)
        target = _build(int(dim), factory, metric)
        needs = training_needs(target, dim=int(dim), max_train_bytes=max_train_bytes)
        index = _build(int(dim), EXACT_FACTORY, metric) if needs.trainable else target
        self._init_from(
            index,
            factory=factory,
            built_factory=EXACT_FACTORY if needs.trainable else factory,
            trained_count=0,
        )
        self._needs = needs
        self.set_search_defaults(nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)

    def _init_from(self, index: Any, *, factory: str, built_factory: str, trained_count: int) -> None:
        self._index = index
        self._factory = factory
        self._built_factory = built_factory
        self._trained_count = int(trained_count)
        self._metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        self._labels_cache: npt.NDArray[np.int64] | None = None
        self._ids_cache: npt.NDArray[np.int64] | None = None
        self._needs = None
        self._nprobe: int | None = None
        self._ef_search: int | None = None
        self._k_factor: float | None = None
        self._gpu_device: int | None = None
        self._gpu: GpuCopy | None = None

    @classmethod
    def from_faiss(
        cls, index: Any, *, factory: str, built_factory: str | None = None, trained_count: int = 0
    ) -> FaissGalleryIndex:
        """Wrap an existing FAISS ``IndexIDMap``/``IndexIDMap2``.

        Args:
            index: the FAISS index.
            factory: the configured factory string it stands for.
            built_factory: the factory it was built with (default ``factory``; ``"IDMap2,Flat"`` while a
                trainable factory is still in its exact stage).
            trained_count: vectors it held when it was trained (0: untrained or no training).

        Raises:
            CorruptIndexError: if ``index`` is not an id-mapped index with a supported metric.
        """
        if not isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            raise CorruptIndexError(f"expected an IndexIDMap/IndexIDMap2, got {type(index).__name__}")
        if index.metric_type not in _FAISS_METRICS.values():
            raise CorruptIndexError(f"unsupported FAISS metric type {index.metric_type}")
        self = cls.__new__(cls)
        self._init_from(
            index, factory=factory, built_factory=built_factory or factory, trained_count=trained_count
        )
        return self

    @classmethod
    def build(
        cls,
        dim: int,
        source: Callable[[], Batches],
        *,
        factory: str = DEFAULT_FACTORY,
        metric: str = "ip",
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: float | None = None,
        max_train_bytes: int = DEFAULT_TRAIN_BYTES,
        seed: int = 0,
        should_stop: Callable[[], bool] | None = None,
    ) -> FaissGalleryIndex:
        """Build an index from every stored vector, training it first when it needs it and can.

        A factory that needs training is trained when the stream holds at least
        ``TrainingNeeds.min_vectors`` vectors: pass one draws a uniform reservoir sample
        (:func:`~vireid.index._training.reservoir_sample`) of ``TrainingNeeds.sample_size``, the index is
        trained on it, pass two adds every vector. With fewer vectors the index is exact.

        Args:
            dim: embedding width ``D``.
            source: returns a fresh iterator of ``(ids (n,) int64, vectors (n, D) float32)`` batches each
                call (it is read twice when training), e.g. stored embeddings read from SQL.
            factory, metric, nprobe, ef_search, k_factor, max_train_bytes: as for the constructor.
            seed: seed of the reservoir sample.
            should_stop: polled between batches; when it returns True the build stops with
                :class:`InterruptedError` (a service shutting down).

        Raises:
            ValueError: a batch of another width, a repeated id, or a failed training.
            InterruptedError: ``should_stop`` returned True.
        """
        index = cls(
            dim,
            factory=factory,
            metric=metric,
            nprobe=nprobe,
            ef_search=ef_search,
            k_factor=k_factor,
            max_train_bytes=max_train_bytes,
        )
        needs = index._needs
        assert needs is not None
        stop = should_stop or (lambda: False)
        if needs.trainable:
            sample, seen = reservoir_sample(_stoppable(source(), stop), needs.sample_size, seed=seed)
            if seen >= needs.min_vectors:
                index._train(sample, seen)
        for ids, vectors in _stoppable(source(), stop):
            if ids.size:
                index.add(ids, vectors)
        return index

    def _train(self, sample: npt.NDArray[np.float32], seen: int) -> None:
        """Replace the (empty, exact) stage index by the configured one trained on ``sample``."""
        trained = _build(self.dim, self._factory, self._metric)
        try:
            trained.train(as_vectors(sample, dim=self.dim))
        except RuntimeError as exc:
            raise ValueError(f"cannot train {self._factory!r} on {sample.shape[0]} vectors: {exc}") from exc
        if len(self):
            raise RuntimeError("an index is trained before vectors are added")  # pragma: no cover
        self._index = trained
        self._gpu = None
        self._built_factory = self._factory
        self._trained_count = int(seen)
        self._labels_cache = self._ids_cache = None
        logger.info("trained %s on a sample of %d of %d vectors", self._factory, sample.shape[0], seen)

    def set_search_defaults(
        self, *, nprobe: int | None = None, ef_search: int | None = None, k_factor: float | None = None
    ) -> None:
        """Set the default ``nprobe``, ``ef_search`` and refine ``k_factor`` of searches (None: FAISS's
        own default: 1, 16 and 1).

        ``k_factor`` applies to a refined factory (``...,RFlat``): the base index returns
        ``k_factor · k`` candidates that are re-scored exactly (FAISS's ``k_factor_rf``).

        Raises:
            ValueError: if ``nprobe`` or ``ef_search`` is not a positive integer or ``k_factor`` < 1.
        """
        self._nprobe = _check_knob(nprobe, "nprobe")
        self._ef_search = _check_knob(ef_search, "ef_search")
        if k_factor is not None and not (isinstance(k_factor, (int, float)) and k_factor >= 1):
            raise ValueError(f"k_factor must be a number >= 1, got {k_factor!r}")
        self._k_factor = None if k_factor is None else float(k_factor)

    def use_gpu(self, device: int | None) -> None:
        """Answer unfiltered searches from a GPU copy on ``device`` (None: CPU only).

        The copy (:class:`vireid.index._gpu.GpuCopy`) is made at the first search, kept in step with
        adds, and made again after a remove or a training. Indexes FAISS cannot put on a GPU (HNSW),
        filtered searches and indexes with tombstones are searched on the CPU. Saving always writes the
        CPU index.
        """
        self._gpu_device = device
        self._gpu = None

    @property
    def on_gpu(self) -> bool:
        """True when the last unfiltered search ran on a GPU copy."""
        return self._gpu is not None

    def _gpu_copy(self) -> GpuCopy | None:
        if self._gpu_device is None or self.tombstones or not gpu_supports(self._index.index):
            return None
        if self._gpu is None:
            try:
                self._gpu = GpuCopy(self._index.index, self._gpu_device)
            except (RuntimeError, ValueError) as exc:
                logger.warning("gallery search stays on the CPU: %s", exc)
                self._gpu_device = None
                return None
        return self._gpu

    def _raw_search(
        self, queries: npt.NDArray[np.float32], fetch: int, *, params: Any, selector: Any, knobs: _Knobs
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """FAISS search on the GPU copy (unfiltered) or the CPU index: ``(distances, ids)``."""
        copy = self._gpu_copy() if selector is None else None
        if copy is None:
            dist, found = self._index.search(queries, fetch, params=params)
            return dist, found
        dist, internal = copy.search(queries, fetch, nprobe=knobs.nprobe)
        labels = self._labels()
        return dist, np.where(internal >= 0, labels[np.clip(internal, 0, None)], -1)

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
        """The configured FAISS factory string."""
        return self._factory

    @property
    def built_factory(self) -> str:
        """The factory FAISS holds now: ``"IDMap2,Flat"`` while a trainable factory is untrained."""
        return self._built_factory

    @property
    def trained_count(self) -> int:
        """Vectors the index held when it was trained (0 when untrained or needing no training)."""
        return self._trained_count

    @property
    def tombstones(self) -> int:
        """Removed vectors still stored (only in indexes FAISS cannot remove from, e.g. HNSW)."""
        return int(self._index.ntotal) - len(self)

    @property
    def faiss_index(self) -> Any:
        """The wrapped FAISS index (for inspection); do not add or remove through it."""
        return self._index

    def training_needs(self) -> TrainingNeeds:
        """How many vectors the configured factory needs before and for training."""
        if self._needs is None:
            self._needs = training_needs(_build(self.dim, self._factory, self._metric), dim=self.dim)
        return self._needs

    def build_reason(self, *, retrain_factor: float = DEFAULT_RETRAIN_FACTOR) -> str | None:
        """Why this index should be rebuilt with :meth:`build` now, or None.

        ``"train"``: a trainable factory still exact holds ``TrainingNeeds.min_vectors`` vectors;
        ``"retrain"``: a trained index holds ``retrain_factor`` times the vectors it was trained on;
        ``"compact"``: tombstones exceed 20% of the stored vectors.

        Raises:
            ValueError: if ``retrain_factor`` <= 1.
        """
        if not retrain_factor > 1:
            raise ValueError(f"retrain_factor must be > 1, got {retrain_factor}")
        needs = self.training_needs()
        n = len(self)
        if needs.trainable and self._built_factory != self._factory and n >= needs.min_vectors:
            return "train"
        if needs.trainable and self._trained_count and n >= retrain_factor * self._trained_count:
            return "retrain"
        if self.tombstones > _MAX_TOMBSTONE_SHARE * max(1, int(self._index.ntotal)):
            return "compact"
        return None

    def __len__(self) -> int:
        return int(self._live_labels().size)

    def __repr__(self) -> str:
        return (
            f"FaissGalleryIndex(dim={self.dim}, factory={self._factory!r}, built={self._built_factory!r}, "
            f"metric={self._metric!r}, ntotal={len(self)})"
        )

    def _labels(self) -> npt.NDArray[np.int64]:
        if self._labels_cache is None:
            self._labels_cache = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return self._labels_cache

    def _live_labels(self) -> npt.NDArray[np.int64]:
        if self._ids_cache is None:
            labels = self._labels()
            self._ids_cache = np.sort(labels[labels >= 0])
        return self._ids_cache

    def ids(self) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids, ascending."""
        return self._live_labels().copy()

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        """Add ``(N,)`` ids with their ``(N, D)`` float32 vectors.

        An index of a trainable factory is exact until it is rebuilt with :meth:`build`; adding never
        trains (see :meth:`build_reason`).

        Raises:
            ValueError: on a bad shape or dtype, a non-finite value, a length mismatch, or an id that is
                repeated or already present. Nothing is added then.
        """
        new_ids, new_vectors = check_new_entries(ids, vectors, dim=self.dim, existing=self.ids())
        if new_ids.size == 0:
            return
        self._index.add_with_ids(new_vectors, new_ids)
        self._labels_cache = self._ids_cache = None
        if self._gpu is not None:
            self._gpu.add(new_vectors)

    def search(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        allowed_ids: npt.ArrayLike | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Search with the shared ordering; see :meth:`GalleryIndex.search`.

        Args:
            vectors: ``(Q, D)`` float32 queries.
            k: results per query (>= 1).
            allowed_ids: optional ``(M,)`` ids that may be returned, applied inside FAISS with an
                ``IDSelectorBatch``.
            nprobe: IVF lists probed (capped at the list count); default the index's default.
            ef_search: HNSW beam width (of the index, or of an HNSW coarse quantiser); default the
                index's default.

        Returns:
            ``(scores (Q, k) float32, ids (Q, k) int64)``, ``-1`` / ``-inf`` padded. Exact and
            IVF indexes return ``min(k, candidates)`` results per row; so does HNSW, whose beam grows
            until it does (see the class docstring).

        Raises:
            ValueError: on bad queries, ``k``, ``allowed_ids``, ``nprobe`` or ``ef_search``.
        """
        queries = as_vectors(vectors, dim=self.dim)
        k = check_k(k)
        knobs = _Knobs(
            _check_knob(nprobe, "nprobe") or self._nprobe,
            _check_knob(ef_search, "ef_search") or self._ef_search,
            self._k_factor,
        )
        n_candidates = len(self)
        selector: Any = None
        if allowed_ids is not None:
            allowed = np.intersect1d(as_ids(allowed_ids, name="allowed_ids"), self.ids())
            n_candidates = int(allowed.size)
            selector = faiss.IDSelectorBatch(allowed)
        elif self.tombstones:
            selector = faiss.IDSelectorRange(*_ALL_IDS)
        if n_candidates == 0 or queries.shape[0] == 0:
            return rank_results(
                np.zeros((queries.shape[0], 0), np.float32), np.zeros((queries.shape[0], 0), np.int64), k=k
            )
        out_scores, out_ids = self._search_with_ties(
            queries, k, n_candidates=n_candidates, selector=selector, knobs=knobs
        )
        want = min(k, n_candidates)
        short = np.flatnonzero((out_ids >= 0).sum(axis=1) < want)
        while short.size and not knobs.exhaustive(self._index, n_candidates):
            knobs = knobs.escalated(self._index, n_candidates)
            scores, ids = self._search_with_ties(
                queries[short], k, n_candidates=n_candidates, selector=selector, knobs=knobs
            )
            out_scores[short], out_ids[short] = scores, ids
            short = short[(ids >= 0).sum(axis=1) < want]
        if short.size:
            logger.warning("%d queries found fewer than %d of %d candidates", short.size, want, n_candidates)
        del selector  # kept alive until FAISS is done with it
        return out_scores, out_ids

    def _search_with_ties(
        self, queries: npt.NDArray[np.float32], k: int, *, n_candidates: int, selector: Any, knobs: _Knobs
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Fetch more than ``k`` neighbours until each row's tie group at the cut-off is complete."""
        nq = queries.shape[0]
        out_scores = np.empty((nq, k), dtype=np.float32)
        out_ids = np.empty((nq, k), dtype=np.int64)
        cut = min(k, n_candidates)
        fetch = min(n_candidates, cut + _TIE_MARGIN)
        pending = np.arange(nq)
        params, keep_alive = _search_parameters(self._index, selector, knobs, fetch=fetch)
        while pending.size:
            dist, found = self._raw_search(
                queries[pending], fetch, params=params, selector=selector, knobs=knobs
            )
            scores = (dist if self._metric == "ip" else -dist).astype(np.float32)
            found = np.where(found >= 0, found, -1)  # tombstones never come back, but be sure
            if fetch >= n_candidates:
                done = np.ones(pending.size, dtype=bool)
            else:
                done = (found[:, -1] < 0) | (scores[:, -1] != scores[:, cut - 1])
            ranked_scores, ranked_ids = rank_results(scores[done], found[done].astype(np.int64), k=k)
            out_scores[pending[done]] = ranked_scores
            out_ids[pending[done]] = ranked_ids
            pending = pending[~done]
            fetch = min(n_candidates, fetch * 2)
            params, keep_alive = _search_parameters(self._index, selector, knobs, fetch=fetch)
        del keep_alive
        return out_scores, out_ids

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``(M,)`` ids; unknown ids are ignored. Returns how many were removed.

        From an HNSW or IVF index the ids become tombstones (see the class docstring); they no longer
        count, search or appear in :meth:`ids`.
        """
        to_remove = np.intersect1d(np.unique(as_ids(ids)), self.ids())
        if to_remove.size == 0:
            return 0
        if isinstance(faiss.downcast_index(self._index.index), faiss.IndexFlatCodes):
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(to_remove)))
        else:
            removed = self._tombstone(to_remove)
        self._labels_cache = self._ids_cache = None
        self._gpu = None  # internal labels moved: copied again at the next search
        return removed

    def _tombstone(self, ids: npt.NDArray[np.int64]) -> int:
        """Rewrite the labels of ``ids`` to tombstones in place (IDMap2's reverse map is rebuilt)."""
        n = int(self._index.ntotal)
        labels = faiss.rev_swig_ptr(self._index.id_map.data(), n)
        hit = np.isin(labels, ids)
        labels[hit] = _TOMBSTONE
        if isinstance(self._index, faiss.IndexIDMap2):
            self._index.construct_rev_map()
        return int(hit.sum())

    def serialize(self) -> bytes:
        """The index as FAISS serialisation bytes (what :meth:`save` writes)."""
        return bytes(faiss.serialize_index(self._index))

    @classmethod
    def deserialize(
        cls, data: bytes, *, factory: str, built_factory: str | None = None, trained_count: int = 0
    ) -> FaissGalleryIndex:
        """Rebuild an index from :meth:`serialize` bytes (the other arguments as for :meth:`from_faiss`).

        Raises:
            CorruptIndexError: if the bytes are not a valid id-mapped FAISS index.
        """
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise CorruptIndexError(f"cannot parse FAISS index: {exc}") from exc
        return cls.from_faiss(
            index, factory=factory, built_factory=built_factory, trained_count=trained_count
        )

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
            index._factory = index._built_factory = _reverse_factory(index.faiss_index)
        return index


class _Knobs:
    """``nprobe`` / ``efSearch`` of one search, grown when a search came back short."""

    __slots__ = ("ef_search", "k_factor", "nprobe")

    def __init__(self, nprobe: int | None, ef_search: int | None, k_factor: float | None = None) -> None:
        self.nprobe, self.ef_search, self.k_factor = nprobe, ef_search, k_factor

    @staticmethod
    def _parts(index: Any) -> tuple[Any, Any]:
        """``(IVF part or None, HNSW part or None)`` of an id-mapped index (HNSW: also a coarse quantiser)."""
        ivf = faiss.try_extract_index_ivf(index)
        inner = faiss.downcast_index(ivf.quantizer if ivf is not None else index.index)
        return ivf, inner if isinstance(inner, faiss.IndexHNSW) else None

    def exhaustive(self, index: Any, n_candidates: int) -> bool:
        """True when this search already scans everything it can."""
        ivf, hnsw = self._parts(index)
        if ivf is not None:
            return bool((self.nprobe or ivf.nprobe) >= ivf.nlist)
        if hnsw is not None:
            return bool((self.ef_search or hnsw.hnsw.efSearch) >= int(index.ntotal))
        return True

    def escalated(self, index: Any, n_candidates: int) -> _Knobs:
        """The next, wider search: nprobe and efSearch times 4, capped at what scans everything."""
        ivf, hnsw = self._parts(index)
        nprobe, ef = self.nprobe, self.ef_search
        if ivf is not None:
            nprobe = min(int(ivf.nlist), (nprobe or int(ivf.nprobe)) * _ESCALATION)
        if hnsw is not None:
            cap = int(hnsw.ntotal) if ivf is not None else int(index.ntotal)
            ef = min(max(cap, 1), (ef or int(hnsw.hnsw.efSearch)) * _ESCALATION)
        return _Knobs(nprobe, ef, self.k_factor)


def _search_parameters(index: Any, selector: Any, knobs: _Knobs, *, fetch: int) -> tuple[Any, list[Any]]:
    """FAISS ``SearchParameters`` for an id-mapped index (and the objects they point to, kept alive).

    The parameter class must match the index below the id map (``SearchParametersIVF`` for IVF,
    ``SearchParametersHNSW`` for HNSW, ``IndexRefineSearchParameters`` for a refined index, whose base
    index gets the selector translated to its internal ids explicitly, since ``IndexIDMap`` only
    translates the top-level selector).
    """
    keep: list[Any] = [selector]
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexRefine):
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = float(knobs.k_factor or inner.k_factor)
        translated = None if selector is None else faiss.IDSelectorTranslated(index.id_map, selector)
        base, base_keep = _plain_parameters(faiss.downcast_index(inner.base_index), translated, knobs, fetch)
        params.base_index_params = base
        keep += [translated, base, *base_keep]
        return params, keep
    params, more = _plain_parameters(inner, selector, knobs, fetch)
    return params, keep + more


def _plain_parameters(inner: Any, selector: Any, knobs: _Knobs, fetch: int) -> tuple[Any, list[Any]]:
    keep: list[Any] = []
    params: Any
    if isinstance(inner, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(int(inner.nlist), knobs.nprobe or int(inner.nprobe))
        quantizer = faiss.downcast_index(inner.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            qparams = _HNSW_PARAMETERS()
            qparams.efSearch = max(params.nprobe, knobs.ef_search or int(quantizer.hnsw.efSearch))
            params.quantizer_params = qparams
            keep.append(qparams)
    elif isinstance(inner, faiss.IndexHNSW):
        params = _HNSW_PARAMETERS()
        params.efSearch = max(fetch, knobs.ef_search or int(inner.hnsw.efSearch))
    else:
        params = faiss.SearchParameters()
    params.sel = selector
    return params, keep


def _check_knob(value: int | None, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _build(dim: int, factory: str, metric: str) -> Any:
    """``faiss.index_factory`` of an id-mapped factory, with vireid's error messages."""
    if not isinstance(factory, str) or not factory.startswith("IDMap"):
        raise ValueError(
            f"factory must start with 'IDMap' or 'IDMap2' so SQL ids can be stored, got {factory!r}"
        )
    try:
        return faiss.index_factory(int(dim), factory, _FAISS_METRICS[metric])
    except RuntimeError as exc:
        raise ValueError(f"FAISS cannot build factory {factory!r} for dim {dim}: {exc}") from exc


def _stoppable(batches: Batches, should_stop: Callable[[], bool]) -> Batches:
    for batch in batches:
        if should_stop():
            raise InterruptedError("index build stopped")
        yield batch


def _reverse_factory(index: Any) -> str:
    """Best-effort factory string of a loaded FAISS index (``"unknown"`` when FAISS cannot tell)."""
    from faiss.contrib.factory_tools import reverse_index_factory

    try:
        return str(reverse_index_factory(index))  # type: ignore[no-untyped-call]
    except NotImplementedError:
        logger.warning("cannot recover the factory string of a %s", type(index).__name__)
        return "unknown"
