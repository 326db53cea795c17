"""Data access for gallery items and their embeddings (house-style §26, architecture.md contract 5)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, and_, delete, func, insert, select, true
from sqlalchemy.orm import Session

from vireid.index._models import Embedding, GalleryItem, decode_vector, encode_vector, utc_now
from vireid.index._validation import as_ids, as_vectors, check_modality, check_model_version, check_sha256

logger = logging.getLogger(__name__)

#: Ids or digests per ``IN (...)`` clause; keeps every backend below its bound-parameter limit.
DEFAULT_IN_CHUNK: Final = 500
#: Embeddings per batch yielded by :meth:`GalleryRepository.iter_embeddings`.
DEFAULT_EMBEDDING_BATCH: Final = 4096


class DuplicateItemError(ValueError):
    """An item with the same ``(sha256, model_version, modality)`` exists or is repeated in the batch."""

    def __init__(self, message: str, *, sha256s: Sequence[str]) -> None:
        super().__init__(message)
        self.sha256s = list(sha256s)


@dataclass(frozen=True)
class NewItem:
    """Metadata of one crop to add to the gallery (its embedding is passed alongside).

    Attributes:
        camera: camera name, 1-64 characters.
        modality: ``"visible"`` or ``"infrared"``.
        sha256: lowercase hex SHA-256 of the image bytes.
        captured_at: timezone-aware capture time, or ``None``.
        track_id: tracker id of the person in the camera stream, or ``None``.
        source: original path or upload file name, or ``None``.

    Raises:
        ValueError: on an empty or too long camera, a bad modality or digest, or a naive datetime.
    """

    camera: str
    modality: str
    sha256: str
    captured_at: datetime | None = None
    track_id: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.camera, str) or not 1 <= len(self.camera) <= 64:
            raise ValueError(f"camera must be a string of 1-64 characters, got {self.camera!r}")
        check_modality(self.modality)
        check_sha256(self.sha256)
        if self.captured_at is not None and (
            not isinstance(self.captured_at, datetime) or self.captured_at.utcoffset() is None
        ):
            raise ValueError(f"captured_at must be a timezone-aware datetime, got {self.captured_at!r}")
        if self.track_id is not None and len(self.track_id) > 128:
            raise ValueError(f"track_id is longer than 128 characters: {self.track_id[:40]!r}...")
        if self.source is not None and len(self.source) > 1024:
            raise ValueError(f"source is longer than 1024 characters: {self.source[:40]!r}...")


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _check_window(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.utcoffset() is None:
            raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")


class GalleryRepository:
    """Reads and writes gallery rows. Every method takes the caller's ``session`` and never commits.

    The caller owns the unit of work (house-style §26): it commits after the index was updated, or
    rolls back. Methods flush when they need database-generated ids.

    Args:
        in_chunk: values per ``IN (...)`` clause for bulk look-ups.
    """

    def __init__(self, *, in_chunk: int = DEFAULT_IN_CHUNK) -> None:
        if in_chunk < 1:
            raise ValueError(f"in_chunk must be >= 1, got {in_chunk}")
        self._in_chunk = in_chunk

    def add_items(
        self,
        *,
        session: Session,
        items: Sequence[NewItem],
        vectors: npt.NDArray[np.float32],
        model_version: str,
    ) -> list[int]:
        """Insert items with their embeddings and return the new ids, in the order of ``items``.

        Args:
            session: open session; flushed, not committed.
            items: metadata of the N crops.
            vectors: ``(N, D)`` float32 embeddings, row i belongs to ``items[i]``.
            model_version: export manifest ``model_version`` that produced ``vectors``.

        Raises:
            ValueError: on a bad model version, bad vectors, or a length mismatch.
            DuplicateItemError: if a ``(sha256, modality)`` is repeated in the batch or already stored
                for ``model_version`` (check first with :meth:`find_existing_sha256` to skip them).
                Nothing is inserted then.
        """
        check_model_version(model_version)
        if not all(isinstance(item, NewItem) for item in items):
            raise ValueError("items must be NewItem instances")
        array = as_vectors(vectors)
        if array.shape[0] != len(items):
            raise ValueError(f"got {len(items)} items for vectors of shape {array.shape}")
        self._refuse_duplicates(session=session, items=items, model_version=model_version)
        rows = [
            GalleryItem(
                camera=item.camera,
                modality=item.modality,
                captured_at=item.captured_at,
                track_id=item.track_id,
                source=item.source,
                sha256=item.sha256,
                model_version=model_version,
                embedding=Embedding(dim=int(array.shape[1]), vector=encode_vector(vector)),
            )
            for item, vector in zip(items, array, strict=True)
        ]
        session.add_all(rows)
        session.flush()
        return [int(row.id) for row in rows]

    def add_items_bulk(
        self,
        *,
        session: Session,
        items: Sequence[NewItem],
        vectors: npt.NDArray[np.float32],
        model_version: str,
    ) -> list[int]:
        """:meth:`add_items` through two executemany INSERT statements instead of ORM objects.

        Same arguments, checks, result and errors as :meth:`add_items`; the rows are written with
        SQLAlchemy's bulk ``session.execute(insert(...).returning(..., sort_by_parameter_order=True),
        rows)`` (``insertmanyvalues``), which keeps the new ids in the order of ``items``, then one
        executemany for the embeddings. No ORM objects enter the session. About 4x faster than
        :meth:`add_items` for D=2048 on SQLite (docs/benchmarks.md, bulk import). Used by the
        embeddings import (``vireid ingest --embeddings``).

        Raises:
            ValueError: on a bad model version, bad vectors, or a length mismatch.
            DuplicateItemError: as :meth:`add_items`; nothing is inserted then.
        """
        check_model_version(model_version)
        if not all(isinstance(item, NewItem) for item in items):
            raise ValueError("items must be NewItem instances")
        array = as_vectors(vectors)
        if array.shape[0] != len(items):
            raise ValueError(f"got {len(items)} items for vectors of shape {array.shape}")
        if not items:
            return []
        self._refuse_duplicates(session=session, items=items, model_version=model_version)
        now = utc_now()
        rows = [
            {
                "camera": item.camera,
                "modality": item.modality,
                "captured_at": item.captured_at,
                "track_id": item.track_id,
                "source": item.source,
                "sha256": item.sha256,
                "model_version": model_version,
                "created_at": now,
            }
            for item in items
        ]
        stmt = insert(GalleryItem).returning(GalleryItem.id, sort_by_parameter_order=True)
        ids = [int(i) for i in session.scalars(stmt, rows)]
        if len(ids) != len(items):
            raise RuntimeError(f"bulk insert returned {len(ids)} ids for {len(items)} rows")
        dim = int(array.shape[1])
        session.execute(
            insert(Embedding),
            [
                {"item_id": item_id, "dim": dim, "vector": encode_vector(vector)}
                for item_id, vector in zip(ids, array, strict=True)
            ],
        )
        return ids

    def _refuse_duplicates(self, *, session: Session, items: Sequence[NewItem], model_version: str) -> None:
        seen: set[tuple[str, str]] = set()
        repeated: list[str] = []
        for item in items:
            key = (item.sha256, item.modality)
            if key in seen:
                repeated.append(item.sha256)
            seen.add(key)
        if repeated:
            raise DuplicateItemError(f"sha256 repeated within the batch: {repeated[:5]}", sha256s=repeated)
        stored: list[str] = []
        for modality in sorted({item.modality for item in items}):
            digests = [item.sha256 for item in items if item.modality == modality]
            stored += sorted(
                self.find_existing_sha256(
                    session=session, sha256s=digests, model_version=model_version, modality=modality
                )
            )
        if stored:
            raise DuplicateItemError(
                f"{len(stored)} item(s) already in the gallery for model {model_version!r}: {stored[:5]}",
                sha256s=stored,
            )

    def find_existing_sha256(
        self, *, session: Session, sha256s: Iterable[str], model_version: str, modality: str
    ) -> set[str]:
        """The subset of ``sha256s`` already stored for ``(model_version, modality)``."""
        return set(
            self.find_existing(
                session=session, sha256s=sha256s, model_version=model_version, modality=modality
            )
        )

    def find_existing(
        self, *, session: Session, sha256s: Iterable[str], model_version: str, modality: str
    ) -> dict[str, int]:
        """``{sha256: id}`` of the ``sha256s`` already stored for ``(model_version, modality)``."""
        wanted = sorted(set(sha256s))
        found: dict[str, int] = {}
        for chunk in _chunks(wanted, self._in_chunk):
            stmt = select(GalleryItem.sha256, GalleryItem.id).where(
                GalleryItem.model_version == model_version,
                GalleryItem.modality == modality,
                GalleryItem.sha256.in_(chunk),
            )
            found.update((str(digest), int(item_id)) for digest, item_id in session.execute(stmt))
        return found

    def referenced_sha256(self, *, session: Session, sha256s: Iterable[str]) -> set[str]:
        """The subset of ``sha256s`` that at least one item holds, whatever its model version or
        modality (a stored crop of such an image is still needed)."""
        wanted = sorted(set(sha256s))
        found: set[str] = set()
        for chunk in _chunks(wanted, self._in_chunk):
            stmt = select(GalleryItem.sha256).where(GalleryItem.sha256.in_(chunk)).distinct()
            found.update(str(digest) for digest in session.scalars(stmt))
        return found

    def get(self, *, session: Session, id: int) -> GalleryItem | None:
        """The item with this id, or ``None``."""
        return session.get(GalleryItem, int(id))

    def delete(self, *, session: Session, id: int) -> bool:
        """Delete an item and its embedding (flushed, not committed). Returns ``False`` if absent."""
        item = session.get(GalleryItem, int(id))
        if item is None:
            return False
        session.delete(item)
        session.flush()
        return True

    def delete_many(self, *, session: Session, ids: npt.ArrayLike) -> int:
        """Delete several items (embeddings follow by ``ON DELETE CASCADE``). Returns how many."""
        unique = np.unique(as_ids(ids)).tolist()
        removed = 0
        for chunk in _chunks(unique, self._in_chunk):
            session.execute(delete(Embedding).where(Embedding.item_id.in_(chunk)))
            result = session.execute(delete(GalleryItem).where(GalleryItem.id.in_(chunk)))
            removed += int(getattr(result, "rowcount", 0) or 0)
        session.expire_all()
        return removed

    def count(self, *, session: Session, model_version: str, modality: str) -> int:
        """Number of items for ``(model_version, modality)``."""
        stmt = select(func.count(GalleryItem.id)).where(
            GalleryItem.model_version == model_version, GalleryItem.modality == modality
        )
        return int(session.scalar(stmt) or 0)

    def stats(self, *, session: Session, model_version: str | None = None) -> dict[tuple[str, str], int]:
        """Item counts per ``(camera, modality)``, sorted by key; all model versions when ``None``."""
        stmt = select(GalleryItem.camera, GalleryItem.modality, func.count(GalleryItem.id)).group_by(
            GalleryItem.camera, GalleryItem.modality
        )
        if model_version is not None:
            stmt = stmt.where(GalleryItem.model_version == model_version)
        return {(camera, modality): int(n) for camera, modality, n in sorted(session.execute(stmt).all())}

    def list_ids(self, *, session: Session, model_version: str, modality: str) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids of ``(model_version, modality)``, ascending."""
        stmt = (
            select(GalleryItem.id)
            .where(GalleryItem.model_version == model_version, GalleryItem.modality == modality)
            .order_by(GalleryItem.id)
        )
        return np.fromiter(session.scalars(stmt), dtype=np.int64)

    def matching_ids(
        self,
        *,
        session: Session,
        model_version: str,
        modality: str,
        cameras: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> npt.NDArray[np.int64]:
        """Ids that pass camera / capture-time filters, ascending: the ``allowed_ids`` of a search.

        Args:
            session: open session.
            model_version: model version of the index.
            modality: modality of the index.
            cameras: keep only these cameras; ``None`` keeps all.
            since: keep ``captured_at >= since`` (timezone-aware); items without a time are dropped.
            until: keep ``captured_at < until`` (timezone-aware); items without a time are dropped.

        Returns:
            ``(M,)`` int64.

        Raises:
            ValueError: on naive datetimes or ``since >= until``.
        """
        _check_window(since, until)
        stmt = (
            select(GalleryItem.id)
            .where(GalleryItem.model_version == model_version, GalleryItem.modality == modality)
            .where(_filters(cameras=cameras, since=since, until=until))
            .order_by(GalleryItem.id)
        )
        return np.fromiter(session.scalars(stmt), dtype=np.int64)

    def filter_ids(
        self,
        *,
        session: Session,
        ids: npt.ArrayLike,
        cameras: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[GalleryItem]:
        """Metadata rows of search results, in the order of ``ids``, with optional filters.

        One ``SELECT ... WHERE id IN (...)`` (per :attr:`in_chunk` ids). Ids that are unknown, ``-1``
        padding, or fail a filter are left out.

        Args:
            session: open session.
            ids: ``(K,)`` int64 result ids (``-1`` allowed and skipped).
            cameras: keep only these cameras; ``None`` keeps all.
            since: keep ``captured_at >= since`` (timezone-aware).
            until: keep ``captured_at < until`` (timezone-aware).

        Raises:
            ValueError: on bad ids, naive datetimes or ``since >= until``.
        """
        _check_window(since, until)
        arr = np.asarray(ids)
        wanted = as_ids(arr[arr != -1] if arr.ndim == 1 else arr)
        order = list(dict.fromkeys(wanted.tolist()))
        rows: dict[int, GalleryItem] = {}
        for chunk in _chunks(order, self._in_chunk):
            stmt = select(GalleryItem).where(
                GalleryItem.id.in_(chunk), _filters(cameras=cameras, since=since, until=until)
            )
            rows.update((row.id, row) for row in session.scalars(stmt))
        return [rows[i] for i in order if i in rows]

    def iter_embeddings(
        self,
        *,
        session: Session,
        model_version: str,
        modality: str,
        batch: int = DEFAULT_EMBEDDING_BATCH,
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """Stored embeddings of ``(model_version, modality)`` in id order, to rebuild an index.

        Yields:
            ``(ids (n,) int64, vectors (n, D) float32)`` with ``n <= batch``.

        Raises:
            ValueError: if stored vectors have different dims or a byte length that does not match.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        last, dim = -1, None
        while True:
            stmt = (
                select(Embedding.item_id, Embedding.dim, Embedding.vector)
                .join(GalleryItem, GalleryItem.id == Embedding.item_id)
                .where(GalleryItem.model_version == model_version, GalleryItem.modality == modality)
                .where(Embedding.item_id > last)
                .order_by(Embedding.item_id)
                .limit(batch)
            )
            rows = session.execute(stmt).all()
            if not rows:
                return
            dims = {int(row[1]) for row in rows} | ({dim} if dim is not None else set())
            if len(dims) != 1:
                raise ValueError(f"stored embeddings of {model_version}/{modality} mix dims {sorted(dims)}")
            dim = dims.pop()
            ids = np.array([row[0] for row in rows], dtype=np.int64)
            yield ids, np.stack([decode_vector(row[2], dim) for row in rows])
            last = int(ids[-1])

    def embeddings_of(
        self, *, session: Session, ids: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Stored embeddings of the given items, in the order of ``ids`` (e.g. search candidates).

        One ``SELECT ... WHERE item_id IN (...)`` per :attr:`in_chunk` ids. Unknown ids (deleted since
        the index was searched) and ``-1`` padding are left out; repeated ids are returned once.

        Args:
            session: open session.
            ids: ``(K,)`` int64 item ids.

        Returns:
            ``(found (n,) int64, vectors (n, D) float32)``; ``(0,)`` and ``(0, 0)`` when none is found.

        Raises:
            ValueError: bad ids, stored vectors of different dims or of a byte length that does not match.
        """
        arr = np.asarray(ids)
        order = list(dict.fromkeys(as_ids(arr[arr != -1]).tolist()))
        stored: dict[int, tuple[int, bytes]] = {}
        for chunk in _chunks(order, self._in_chunk):
            stmt = select(Embedding.item_id, Embedding.dim, Embedding.vector).where(
                Embedding.item_id.in_(chunk)
            )
            stored.update((int(row[0]), (int(row[1]), row[2])) for row in session.execute(stmt))
        found = [i for i in order if i in stored]
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        dims = {stored[i][0] for i in found}
        if len(dims) != 1:
            raise ValueError(f"stored embeddings of the requested ids mix dims {sorted(dims)}")
        dim = dims.pop()
        vectors = np.stack([decode_vector(stored[i][1], dim) for i in found])
        return np.asarray(found, dtype=np.int64), vectors


def _filters(
    *, cameras: Sequence[str] | None, since: datetime | None, until: datetime | None
) -> ColumnElement[bool]:
    """SQL condition for optional camera and capture-time filters."""
    clauses: list[ColumnElement[bool]] = []
    if cameras is not None:
        clauses.append(GalleryItem.camera.in_(list(cameras)))
    if since is not None:
        clauses.append(GalleryItem.captured_at >= since)
    if until is not None:
        clauses.append(GalleryItem.captured_at < until)
    return and_(true(), *clauses)
