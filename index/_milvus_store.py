"""The gallery indexes of a service kept in Milvus: one collection per (model version, modality).

The Milvus twin of :class:`~vireid.index.IndexStore`, with the same method names and arguments where
the service calls them. SQL stays the source of truth (house-style §25):

* an index's :meth:`~MilvusSharedIndex.add` only stages the ids (their vectors checked); the rows reach
  Milvus in :meth:`MilvusIndexStore.save`, which the service calls after the SQL commit and which reads
  each staged id's vector, camera and capture time from SQL. An id that SQL does not hold then (its
  transaction was rolled back) is dropped, never inserted. A crash between commit and save leaves SQL
  rows that Milvus lacks; the next :meth:`~MilvusIndexStore.load_or_rebuild` adds them.
* :meth:`~MilvusSharedIndex.remove` deletes from Milvus at once (the service calls it after the SQL
  commit of a delete, or to undo a failed batch).
* :meth:`~MilvusIndexStore.load_or_rebuild` (service start, model activation) compares the
  collection's ids with SQL (count, then :func:`~vireid.index.ids_digest`) and, when they differ,
  deletes the ids SQL lacks and inserts those Milvus lacks from the stored embeddings; a collection
  whose schema, width or index type differs is dropped and rebuilt from SQL. The reason is logged.

Milvus is shared by every process that connects to it, so there is nothing to reload from other
processes (:meth:`~MilvusIndexStore.reload_if_changed` returns ``[]``). See docs/milvus.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from vireid.index._milvus_index import (
    DEFAULT_COLLECTION_PREFIX,
    DEFAULT_MILVUS_INDEX_TYPE,
    VECTOR_FIELD,
    MetadataFilter,
    MilvusGalleryIndex,
    collection_name,
    connect,
)
from vireid.index._models import Embedding, GalleryItem, decode_vector
from vireid.index._protocol import CorruptIndexError
from vireid.index._repository import DEFAULT_EMBEDDING_BATCH, DEFAULT_IN_CHUNK, GalleryRepository
from vireid.index._validation import as_ids, as_vectors, check_modality, check_model_version, ids_digest

logger = logging.getLogger(__name__)

IndexKey = tuple[str, str]
#: ``(ids (n,) int64, vectors (n, D) float32, cameras, capture times)`` read from SQL.
Rows = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], list[str], list[datetime | None]]


class MilvusSharedIndex:
    """The handle of one Milvus collection that the service holds, like :class:`~vireid.index.SharedIndex`.

    ``add`` stages ids until :meth:`MilvusIndexStore.save` writes them (after the SQL commit); searches
    see Milvus's committed rows only. ``remove`` deletes in Milvus at once (and unstages).

    Args:
        index: the collection.
        model_version: model version it belongs to.
        modality: modality it belongs to.
    """

    def __init__(self, index: MilvusGalleryIndex, *, model_version: str, modality: str) -> None:
        self.lock = threading.RLock()
        self.model_version = model_version
        self.modality = modality
        self._index = index
        self._staged: dict[int, None] = {}

    @property
    def index(self) -> MilvusGalleryIndex:
        """The wrapped collection."""
        return self._index

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return self._index.dim

    @property
    def metric(self) -> str:
        """``"ip"``."""
        return self._index.metric

    @property
    def dirty(self) -> bool:
        """True while added ids wait for :meth:`MilvusIndexStore.save`."""
        with self.lock:
            return bool(self._staged)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"MilvusSharedIndex({self.model_version!r}, {self.modality!r}, {self._index!r})"

    def ids(self) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids in Milvus, ascending (staged ids are not there yet)."""
        return self._index.ids()

    def staged(self) -> npt.NDArray[np.int64]:
        """``(S,)`` int64 ids added but not saved yet, in the order they were added."""
        with self.lock:
            return np.fromiter(self._staged, dtype=np.int64, count=len(self._staged))

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        """Stage ``(N,)`` ids whose ``(N, D)`` float32 vectors were just written to SQL.

        The vectors are checked here; :meth:`MilvusIndexStore.save` inserts what SQL stores for them.

        Raises:
            ValueError: a bad shape, dtype or value, a length mismatch, or an id repeated, staged
                already or present in Milvus. Nothing is staged then.
        """
        new_vectors = as_vectors(vectors, dim=self.dim)
        new_ids = as_ids(ids)
        if new_ids.shape[0] != new_vectors.shape[0]:
            raise ValueError(f"got {new_ids.shape[0]} ids for vectors of shape {new_vectors.shape}")
        uniq, counts = np.unique(new_ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"ids are repeated in the batch: {uniq[counts > 1][:10].tolist()}")
        with self.lock:
            staged = [int(i) for i in new_ids if int(i) in self._staged]
            present = self._index.present(new_ids)
            if staged or present.size:
                raise ValueError(f"ids are already in the index: {(staged + present.tolist())[:10]}")
            self._staged.update(dict.fromkeys(int(i) for i in new_ids))

    def remove(self, ids: npt.ArrayLike) -> int:
        """Unstage and delete ``(M,)`` ids; unknown ids are ignored. Returns how many were removed."""
        wanted = np.unique(as_ids(ids))
        with self.lock:
            unstaged = [int(i) for i in wanted if int(i) in self._staged]
            for i in unstaged:
                del self._staged[i]
            return len(unstaged) + self._index.remove(wanted)

    def search(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        allowed_ids: npt.ArrayLike | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``(scores (Q, k) float32, ids (Q, k) int64)``; see :meth:`MilvusGalleryIndex.search`."""
        return self._index.search(vectors, k, allowed_ids=allowed_ids, nprobe=nprobe, ef_search=ef_search)

    def search_filtered(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        cameras: list[str] | None,
        since: datetime | None,
        until: datetime | None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Search with camera / time filters run inside Milvus (a :class:`MetadataFilter`): the same
        items as :meth:`GalleryRepository.matching_ids`, k of them when k pass.

        Raises:
            ValueError: bad queries or ``k``, or naive datetimes.
        """
        where = MetadataFilter(cameras=cameras, since=since, until=until)
        return self._index.search(vectors, k, where=where, nprobe=nprobe, ef_search=ef_search)

    def _unstage(self, ids: npt.NDArray[np.int64]) -> None:
        with self.lock:
            for i in ids.tolist():
                self._staged.pop(int(i), None)

    def _replace(self, index: MilvusGalleryIndex) -> None:
        with self.lock:
            self._index = index


class MilvusIndexStore:
    """The gallery indexes of a service in Milvus, one collection per ``(model_version, modality)``.

    Args:
        uri: ``http://host:19530`` (Milvus standalone or cluster) or a local path ending in ``.db``
            (Milvus Lite, one process at a time).
        sessions: session factory of the gallery database; :meth:`save` reads the staged rows with it.
        token: server credentials (``user:password`` or an API key); ignored by Milvus Lite.
        prefix: collection name prefix (:func:`~vireid.index.milvus_collection_name`), so that several
            galleries can share one Milvus.
        index_type: Milvus vector index type of new collections (``FLAT`` = exact).
        index_params: its build parameters.
        search_params: search parameters (``{"ef": ...}`` for HNSW, ``{"nprobe": ...}`` for IVF).
        client: an existing ``pymilvus.MilvusClient`` (then ``uri`` and ``token`` are not used).

    Raises:
        ImportError: pymilvus (or milvus-lite for a file) is not installed; the message names the extra.
        ValueError: a malformed URI or prefix.
    """

    def __init__(
        self,
        uri: str,
        *,
        sessions: sessionmaker[Session],
        token: str | None = None,
        prefix: str = DEFAULT_COLLECTION_PREFIX,
        index_type: str = DEFAULT_MILVUS_INDEX_TYPE,
        index_params: Mapping[str, Any] | None = None,
        search_params: Mapping[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        collection_name("v", "visible", prefix=prefix)  # checks the prefix
        self._client = client if client is not None else connect(uri, token=token)
        self._uri = uri
        self._sessions = sessions
        self._prefix = prefix
        self._index_type = index_type
        self._index_params = dict(index_params or {})
        self._search_params = dict(search_params or {})
        self._lock = threading.RLock()
        self._indexes: dict[IndexKey, MilvusSharedIndex] = {}

    @property
    def client(self) -> Any:
        """The ``pymilvus.MilvusClient``."""
        return self._client

    def collection(self, model_version: str, modality: str) -> str:
        """The collection name of ``(model_version, modality)``.

        Raises:
            ValueError: a bad model version or modality.
        """
        return collection_name(
            check_model_version(model_version), check_modality(modality), prefix=self._prefix
        )

    def loaded(self) -> list[IndexKey]:
        """Keys of the indexes this store has opened."""
        with self._lock:
            return sorted(self._indexes)

    def forget(self, model_version: str) -> None:
        """Drop a version's handles (their collections stay; see :meth:`remove_files`)."""
        with self._lock:
            for key in [k for k in self._indexes if k[0] == model_version]:
                del self._indexes[key]

    def remove_files(self, model_version: str) -> None:
        """Drop a version's collections and forget their handles."""
        self.forget(model_version)
        for modality in ("visible", "infrared"):
            name = self.collection(model_version, modality)
            if self._client.has_collection(name):
                self._client.drop_collection(name)
                logger.info("dropped Milvus collection %s", name)

    def remove_stale_temp_files(self) -> list[object]:
        """Nothing to clean: Milvus writes no temp files of ours. Returns ``[]``."""
        return []

    def reload_if_changed(
        self, *, session: Session | None = None, repository: GalleryRepository | None = None
    ) -> list[IndexKey]:
        """Nothing to reload: every process reads the same collections. Returns ``[]``."""
        return []

    def _open(self, name: str, dim: int) -> MilvusGalleryIndex:
        return MilvusGalleryIndex(
            self._client,
            name,
            dim=dim,
            index_type=self._index_type,
            index_params=self._index_params,
            search_params=self._search_params,
        )

    def _install(self, key: IndexKey, index: MilvusGalleryIndex) -> MilvusSharedIndex:
        with self._lock:
            shared = self._indexes.get(key)
            if shared is None:
                shared = MilvusSharedIndex(index, model_version=key[0], modality=key[1])
                self._indexes[key] = shared
            else:
                shared._replace(index)
            return shared

    def get(self, model_version: str, modality: str, *, dim: int) -> MilvusSharedIndex:
        """The handle of a collection, opening it (checked against this store's schema) or creating it.

        No SQL check happens here; use :meth:`load_or_rebuild` at start-up.

        Raises:
            ValueError: the index is open with another ``dim``, or a bad model version or modality.
            CorruptIndexError: the collection exists with another schema, width or index type.
        """
        key = (model_version, modality)
        name = self.collection(model_version, modality)
        with self._lock:
            shared = self._indexes.get(key)
            if shared is None:
                shared = self._install(key, self._open(name, dim))
        if shared.dim != dim:
            raise ValueError(f"index {model_version}/{modality} has dim {shared.dim}, asked for {dim}")
        return shared

    def loaded_index(self, model_version: str, modality: str) -> MilvusSharedIndex | None:
        """The handle of ``(model_version, modality)`` when its collection exists, else None.

        Unlike the FAISS store this opens a collection no request has touched yet, so a delete reaches
        every model version's collection. A collection with a foreign schema gives None (logged).
        """
        key = (model_version, modality)
        with self._lock:
            shared = self._indexes.get(key)
        if shared is not None:
            return shared
        name = self.collection(model_version, modality)
        if not self._client.has_collection(name):
            return None
        fields = self._client.describe_collection(name).get("fields", [])
        dims = [int(f.get("params", {}).get("dim", 0)) for f in fields if f.get("name") == VECTOR_FIELD]
        try:
            return self.get(model_version, modality, dim=dims[0] if dims else 0)
        except (CorruptIndexError, ValueError) as exc:
            logger.warning("Milvus collection %s cannot be used: %s", name, exc)
            return None

    def load_or_rebuild(
        self,
        model_version: str,
        modality: str,
        *,
        dim: int,
        session: Session,
        repository: GalleryRepository,
    ) -> MilvusSharedIndex:
        """Open the collection and make it hold exactly the SQL ids of ``(model_version, modality)``.

        A missing collection is created and filled from the stored embeddings; one with another schema,
        width or index type is dropped and rebuilt; one whose ids differ from SQL (count or
        :func:`ids_digest`) loses the ids SQL lacks and gains those it lacks. Each case is logged.

        Raises:
            ValueError: stored embeddings do not have width ``dim``.
        """
        key = (model_version, modality)
        name = self.collection(model_version, modality)
        if not self._client.has_collection(name):
            logger.info("no Milvus collection %s yet; building it from SQL", name)
            return self._fill_new(key, name, dim=dim, session=session, repository=repository)
        try:
            index = self._open(name, dim)
        except CorruptIndexError as exc:
            logger.warning("rebuilding Milvus collection %s from SQL: %s", name, exc)
            return self.rebuild(model_version, modality, dim=dim, session=session, repository=repository)
        shared = self._install(key, index)
        sql_ids = repository.list_ids(session=session, model_version=model_version, modality=modality)
        held = index.ids()
        if not np.array_equal(sql_ids, held):
            extra = np.setdiff1d(held, sql_ids)
            missing = np.setdiff1d(sql_ids, held)
            logger.warning(
                "Milvus collection %s holds %d ids (digest %s), SQL has %d (digest %s): deleting %d ids "
                "SQL lacks, adding %d from the stored embeddings",
                name,
                held.size,
                ids_digest(held)[:12],
                sql_ids.size,
                ids_digest(sql_ids)[:12],
                extra.size,
                missing.size,
            )
            index.remove(extra)
            for rows in _rows_by_ids(session, missing, model_version=model_version, modality=modality):
                _upsert(index, rows, dim=dim)
        return shared

    def rebuild(
        self,
        model_version: str,
        modality: str,
        *,
        dim: int,
        session: Session,
        repository: GalleryRepository,
    ) -> MilvusSharedIndex:
        """Drop the collection and build it again from the embeddings stored in SQL.

        Other processes searching it meanwhile see it empty or partial; prefer :meth:`load_or_rebuild`,
        which repairs only the difference.

        Raises:
            ValueError: stored embeddings do not have width ``dim``.
        """
        name = self.collection(model_version, modality)
        if self._client.has_collection(name):
            self._client.drop_collection(name)
        return self._fill_new(
            (model_version, modality), name, dim=dim, session=session, repository=repository
        )

    def _fill_new(
        self, key: IndexKey, name: str, *, dim: int, session: Session, repository: GalleryRepository
    ) -> MilvusSharedIndex:
        index = self._open(name, dim)
        for rows in _all_rows(session, model_version=key[0], modality=key[1]):
            _upsert(index, rows, dim=dim)
        logger.info("built Milvus collection %s from SQL: %d vectors", name, len(index))
        return self._install(key, index)

    def save(self, model_version: str, modality: str) -> str:
        """Write the staged rows of one index to Milvus; returns the collection name.

        Reads each staged id's vector, camera and capture time from SQL (committed rows) and upserts
        them (an id another process wrote meanwhile is overwritten with the same row). Staged ids that
        SQL does not hold are dropped and logged. With Strong consistency the rows are searchable when
        this returns.

        Raises:
            KeyError: the index is not open.
        """
        with self._lock:
            shared = self._indexes[(model_version, modality)]
        with shared.lock:
            staged = shared.staged()
            written = np.zeros(0, dtype=np.int64)
            if staged.size:
                with self._sessions() as session:
                    for rows in _rows_by_ids(session, staged, model_version=model_version, modality=modality):
                        _upsert(shared.index, rows, dim=shared.dim)
                        written = np.concatenate([written, rows[0]])
                lost = np.setdiff1d(staged, written)
                if lost.size:
                    logger.warning(
                        "%s/%s: %d staged ids are not in SQL (rolled back?) and were not written: %s",
                        model_version,
                        modality,
                        lost.size,
                        lost[:10].tolist(),
                    )
                shared._unstage(staged)
                logger.debug("saved %d rows to %s", written.size, shared.index.name)
        return shared.index.name

    def enable_builds(
        self,
        *,
        sessions: Callable[[], Session],
        repository: GalleryRepository,
        write_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        """Nothing to do: Milvus builds and maintains its own vector indexes (the FAISS store trains
        approximate indexes in the background here)."""

    def stop_builds(self, *, finish: bool = False, timeout: float | None = None) -> None:
        """Nothing to stop: no background builds run in this process (see :meth:`enable_builds`)."""

    def save_all(self, *, only_dirty: bool = True) -> list[str]:
        """:meth:`save` every open index (by default only those with staged rows)."""
        with self._lock:
            items = list(self._indexes.items())
        return [self.save(*key) for key, shared in items if shared.dirty or not only_dirty]


def _upsert(index: MilvusGalleryIndex, rows: Rows, *, dim: int) -> None:
    ids, vectors, cameras, times = rows
    if vectors.shape[1] != dim:
        raise ValueError(f"stored embeddings of {index.name} have dim {vectors.shape[1]}, expected {dim}")
    index.upsert(ids, vectors, cameras=cameras, captured_at=times)


def _decode(rows: list[Any]) -> Rows:
    """``(id, dim, vector bytes, camera, captured_at)`` rows → :data:`Rows`.

    Raises:
        ValueError: stored vectors of different widths or a wrong byte length.
    """
    dims = {int(row[1]) for row in rows}
    if len(dims) != 1:
        raise ValueError(f"stored embeddings mix dims {sorted(dims)}")
    dim = dims.pop()
    ids = np.asarray([int(row[0]) for row in rows], dtype=np.int64)
    vectors = np.stack([decode_vector(row[2], dim) for row in rows])
    return ids, vectors, [str(row[3]) for row in rows], [row[4] for row in rows]


def _columns() -> Any:
    return (
        select(
            Embedding.item_id, Embedding.dim, Embedding.vector, GalleryItem.camera, GalleryItem.captured_at
        )
        .join(GalleryItem, GalleryItem.id == Embedding.item_id)
        .order_by(Embedding.item_id)
    )


def _all_rows(
    session: Session, *, model_version: str, modality: str, batch: int = DEFAULT_EMBEDDING_BATCH
) -> Iterator[Rows]:
    """Every stored row of ``(model_version, modality)`` in id order, ``batch`` at a time."""
    last = -1
    while True:
        stmt = (
            _columns()
            .where(GalleryItem.model_version == model_version, GalleryItem.modality == modality)
            .where(Embedding.item_id > last)
            .limit(batch)
        )
        rows = session.execute(stmt).all()
        if not rows:
            return
        yield _decode(list(rows))
        last = int(rows[-1][0])


def _rows_by_ids(
    session: Session, ids: npt.NDArray[np.int64], *, model_version: str, modality: str
) -> Iterator[Rows]:
    """The stored rows of ``ids`` that belong to ``(model_version, modality)``, in id order."""
    wanted = np.unique(ids)
    for start in range(0, wanted.size, DEFAULT_IN_CHUNK):
        chunk = wanted[start : start + DEFAULT_IN_CHUNK].tolist()
        stmt = _columns().where(
            Embedding.item_id.in_(chunk),
            GalleryItem.model_version == model_version,
            GalleryItem.modality == modality,
        )
        rows = session.execute(stmt).all()
        if rows:
            yield _decode(list(rows))
