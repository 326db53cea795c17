"""Gallery ingest, lookup, delete and stats: used by ``POST /gallery`` and by ``vireid ingest``.

Ingest works in batches. Each batch is read, hashed and sized from the image headers first; unreadable
files are reported and skipped, files whose SHA-256 is already stored for the current model and
modality are skipped as duplicates (their existing id is returned). The rest is decoded, embedded and
released in chunks bounded by pixels and by count, each under the process-wide decode budget
(:class:`~vireid.api.services._budget.PixelBudget`), so only the vectors of a batch are held, never all
of its decoded images. The vectors are then written to SQL and added to the in-memory index under the
write lock; the SQL transaction is committed and the index saved (temp file + rename) only when the
whole batch succeeded. On any error the transaction is rolled back and the vectors added to the
in-memory index are removed again, so the index on disk is always the one of the last good batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from vireid.api._bounds import (
    MAX_CAMERA_CHARS,
    MAX_SOURCE_CHARS,
    MAX_TRACK_ID_CHARS,
    check_datetime,
    check_text,
    is_item_id,
)
from vireid.api.errors import InvalidInputError, NotFoundError, ServiceError
from vireid.api.services._budget import plan_chunks
from vireid.api.services._context import ServiceContext, model_version_of
from vireid.api.services._images import decode, image_pixels, sha256_hex
from vireid.api.services._records import IngestRecord, parse_modality
from vireid.api.settings import MODALITIES, Modality

if TYPE_CHECKING:
    from PIL import Image
    from sqlalchemy.orm import Session

    from vireid.api.services._embedding_import import EmbeddingImport
    from vireid.index import NewItem
    from vireid.serving.runtime import Embedder

__all__ = ["GalleryService", "GalleryStatsResult", "IngestOutcome", "IngestReport"]

logger = logging.getLogger(__name__)

Status = Literal["added", "duplicate", "failed"]


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one record: ``id`` is the new or existing item id (None when failed)."""

    source: str
    status: Status
    id: int | None = None
    reason: str | None = None


@dataclass
class IngestReport:
    """One outcome per ingested record, in input order."""

    outcomes: list[IngestOutcome] = field(default_factory=list)

    def extend(self, outcomes: Iterable[IngestOutcome]) -> None:
        """Append outcomes."""
        self.outcomes.extend(outcomes)

    def of(self, status: Status) -> list[IngestOutcome]:
        """The outcomes with the given status."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def added(self) -> int:
        """Number of new gallery items."""
        return len(self.of("added"))

    @property
    def duplicates(self) -> int:
        """Number of records skipped because the same image was already stored."""
        return len(self.of("duplicate"))

    @property
    def failed(self) -> list[IngestOutcome]:
        """Records skipped because they could not be read or decoded."""
        return self.of("failed")


@dataclass(frozen=True)
class GalleryStatsResult:
    """Item counts for one model version, per (camera, modality)."""

    model_version: str
    by_camera: list[tuple[str, str, int]]

    @property
    def total(self) -> int:
        """Total number of items."""
        return sum(count for _, _, count in self.by_camera)

    def by_modality(self) -> dict[str, int]:
        """Counts per modality (both modalities present, zero when empty)."""
        counts: dict[str, int] = dict.fromkeys(MODALITIES, 0)
        for _, modality, count in self.by_camera:
            counts[modality] = counts.get(modality, 0) + count
        return counts


@dataclass
class _Prepared:
    position: int
    record: IngestRecord
    item: NewItem
    data: bytes = field(repr=False)
    pixels: int
    vector: np.ndarray | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        return str(self.item.sha256)

    @property
    def key(self) -> tuple[str, str]:
        return (self.record.modality, self.sha256)


class GalleryService:
    """Adds, reads and deletes gallery items, keeping SQL and the indexes in step.

    Args:
        context: loaded embedder, sessions, indexes and the write lock.
    """

    def __init__(self, context: ServiceContext) -> None:
        self._ctx = context

    def ingest(
        self,
        records: Sequence[IngestRecord],
        *,
        batch_size: int | None = None,
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Embed and store records in batches.

        Args:
            records: images with their metadata.
            batch_size: records per batch (one SQL transaction + one index save); default
                ``settings.batch_size``.
            strict: raise on the first unreadable record instead of reporting it (the HTTP route uses
                this, so a request is all-or-nothing).
            progress: called with the number of records finished after each batch.

        Returns:
            One outcome per record, in input order.

        Raises:
            InvalidInputError, UnsupportedMediaTypeError, PayloadTooLargeError: with ``strict``, the
                first bad record (nothing of that batch is written).
            Exception: an embedder or storage failure; earlier batches stay committed, the failing one
                is rolled back.
        """
        size = batch_size or self._ctx.settings.batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        report = IngestReport()
        for start in range(0, len(records), size):
            batch = records[start : start + size]
            report.extend(self._ingest_batch(batch, strict=strict))
            if progress is not None:
                progress(len(batch))
        logger.info(
            "ingest: %d added, %d duplicates, %d failed", report.added, report.duplicates, len(report.failed)
        )
        return report

    def _prepare(
        self, batch: Sequence[IngestRecord], *, strict: bool
    ) -> tuple[list[_Prepared], dict[int, IngestOutcome]]:
        """Read, hash and size (from the header) each record; nothing is decoded yet."""
        settings = self._ctx.settings
        prepared: list[_Prepared] = []
        failed: dict[int, IngestOutcome] = {}
        for position, record in enumerate(batch):
            try:
                data = record.read_bytes(max_bytes=settings.max_upload_bytes)
                item = _new_item(record, sha256_hex(data))
                pixels = image_pixels(data, max_pixels=settings.max_image_pixels, source=record.source)
            except (ServiceError, OSError) as exc:
                if strict:
                    raise
                failed[position] = _failure(record, exc)
                continue
            prepared.append(_Prepared(position, record, item, data, pixels))
        return prepared, failed

    def _embed(
        self,
        todo: Sequence[_Prepared],
        modality: Modality,
        *,
        embedder: Embedder,
        strict: bool,
        failed: dict[int, IngestOutcome],
    ) -> list[_Prepared]:
        """Decode, embed and release ``todo`` in chunks under the decode budget; sets each ``vector``.

        Chunks hold at most ``settings.batch_size`` images and ``settings.max_decode_pixels`` pixels
        (one larger image is a chunk of its own); each reserves its pixels from the process-wide
        budget while its images are alive.

        Returns:
            The records that were embedded; the others are in ``failed`` (or, with ``strict``, the first
            decode error is raised).
        """
        settings = self._ctx.settings
        done: list[_Prepared] = []
        for chunk in plan_chunks(
            todo, lambda p: p.pixels, max_pixels=settings.max_decode_pixels, max_items=settings.batch_size
        ):
            with self._ctx.decode_budget.reserve(sum(p.pixels for p in chunk)):
                images: list[Image.Image] = []
                decoded: list[_Prepared] = []
                for p in chunk:
                    try:
                        images.append(
                            decode(p.data, max_pixels=settings.max_image_pixels, source=p.record.source)
                        )
                    except ServiceError as exc:
                        if strict:
                            raise
                        failed[p.position] = _failure(p.record, exc)
                        continue
                    decoded.append(p)
                if not images:
                    continue
                vectors = np.ascontiguousarray(embedder.embed(images, modality), dtype=np.float32)
                del images
            for p, vector in zip(decoded, vectors, strict=True):
                p.vector = vector
            done.extend(decoded)
        return done

    def _ingest_batch(self, batch: Sequence[IngestRecord], *, strict: bool) -> list[IngestOutcome]:
        prepared, outcomes = self._prepare(batch, strict=strict)
        while True:
            # Embed outside the write lock what the model does not hold yet (first copy of each image);
            # _store checks again under the lock and embeds there only what was deleted meanwhile.
            embedder = self._ctx.embedder
            todo = self._not_stored(prepared, version=model_version_of(embedder))
            for modality in MODALITIES:
                group = [p for p in todo if p.record.modality == modality]
                self._embed(group, modality, embedder=embedder, strict=strict, failed=outcomes)
            bad = {p.key: outcomes[p.position] for p in prepared if p.position in outcomes}
            for p in prepared:  # other copies of an image that failed to decode fail the same way
                if p.position not in outcomes and p.key in bad:
                    outcomes[p.position] = IngestOutcome(p.record.source, "failed", reason=bad[p.key].reason)
            prepared = [p for p in prepared if p.position not in outcomes]
            with self._ctx.lock, self._ctx.crop_transaction(p.sha256 for p in prepared):
                if self._ctx.embedder is embedder:  # else the active model changed meanwhile: again
                    self._ctx.refresh()
                    outcomes.update(self._store(prepared, strict=strict))
                    return [outcomes[i] for i in range(len(batch))]
            for p in prepared:
                p.vector = None

    def _not_stored(self, prepared: Sequence[_Prepared], *, version: str) -> list[_Prepared]:
        """The first record of each (modality, image) that ``version`` does not hold yet."""
        with self._ctx.session() as session:
            stored = {
                modality: self._ctx.repository.find_existing(
                    session=session,
                    sha256s={p.sha256 for p in prepared if p.record.modality == modality},
                    model_version=version,
                    modality=modality,
                )
                for modality in MODALITIES
            }
        first: dict[tuple[str, str], _Prepared] = {}
        for p in prepared:
            if p.sha256 not in stored[p.record.modality]:
                first.setdefault(p.key, p)
        return list(first.values())

    def _store(self, prepared: list[_Prepared], *, strict: bool) -> dict[int, IngestOutcome]:
        """Write one batch; caller holds the lock."""
        ctx = self._ctx
        outcomes: dict[int, IngestOutcome] = {}
        added: dict[Modality, np.ndarray] = {}
        with ctx.session() as session:
            try:
                for modality in MODALITIES:
                    group = [p for p in prepared if p.record.modality == modality]
                    if group:
                        new_ids = self._store_group(
                            session, group, modality=modality, outcomes=outcomes, strict=strict
                        )
                        if new_ids.size:
                            added[modality] = new_ids
                session.commit()
            except BaseException:
                for modality, ids in added.items():
                    ctx.index(modality).remove(ids)
                raise
        for modality in added:
            ctx.save(modality)
        return outcomes

    def _store_group(
        self,
        session: Session,
        group: list[_Prepared],
        *,
        modality: Modality,
        outcomes: dict[int, IngestOutcome],
        strict: bool,
    ) -> np.ndarray:
        ctx, repo = self._ctx, self._ctx.repository
        existing = repo.find_existing(
            session=session,
            sha256s={p.sha256 for p in group},
            model_version=ctx.model_version,
            modality=modality,
        )
        first: dict[str, _Prepared] = {}
        for p in group:
            if p.sha256 in existing:
                outcomes[p.position] = IngestOutcome(p.record.source, "duplicate", id=existing[p.sha256])
                if ctx.crops is not None:
                    ctx.crops.put(
                        p.sha256, p.data
                    )  # no-op when stored; fills in items stored before crops were
            elif p.sha256 not in first:
                first[p.sha256] = p
        missing = [p for p in first.values() if p.vector is None]  # stored at the first look, deleted since
        if missing:
            failed: dict[int, IngestOutcome] = {}
            self._embed(missing, modality, embedder=ctx.embedder, strict=strict, failed=failed)
            outcomes.update(failed)
            for p in group:
                if (
                    p.position not in outcomes
                    and first.get(p.sha256) is not None
                    and first[p.sha256].position in failed
                ):
                    outcomes[p.position] = failed[first[p.sha256].position]
        new = [p for p in first.values() if p.vector is not None]
        if not new:
            return np.empty(0, dtype=np.int64)
        vectors = np.stack([p.vector for p in new if p.vector is not None]).astype(np.float32, copy=False)
        ids = np.asarray(
            repo.add_items(
                session=session, items=[p.item for p in new], vectors=vectors, model_version=ctx.model_version
            ),
            dtype=np.int64,
        )
        if ctx.crops is not None:  # before the commit: no row without its crop (the journal undoes them)
            for p in new:
                ctx.crops.put(p.sha256, p.data)
        ctx.index(modality).add(ids, vectors)
        id_of = {p.sha256: int(i) for p, i in zip(new, ids, strict=True)}
        for p in group:
            if p.position not in outcomes and p.sha256 in id_of:
                is_first = first[p.sha256] is p
                status: Status = "added" if is_first else "duplicate"
                outcomes[p.position] = IngestOutcome(p.record.source, status, id=id_of[p.sha256])
        return ids

    def import_embeddings(
        self,
        data: EmbeddingImport,
        *,
        model_version: str,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Store embeddings computed elsewhere (no images), with the ingest's dedup and atomicity rules.

        See :func:`vireid.api.services._embedding_import.import_embeddings` (file formats, dedup key,
        normalisation, batching) for the arguments and errors; ``batch_size`` defaults to
        ``DEFAULT_IMPORT_BATCH`` rows per transaction.
        """
        from vireid.api.services._embedding_import import DEFAULT_IMPORT_BATCH, import_embeddings

        return import_embeddings(
            self._ctx,
            data,
            model_version=model_version,
            batch_size=batch_size or DEFAULT_IMPORT_BATCH,
            progress=progress,
        )

    def get(self, item_id: int) -> Any:
        """The stored item row.

        Raises:
            NotFoundError: no item with this id.
        """
        if not is_item_id(item_id):
            raise NotFoundError(f"gallery item {item_id} not found")
        with self._ctx.session() as session:
            item = self._ctx.repository.get(session=session, id=item_id)
            if item is None:
                raise NotFoundError(f"gallery item {item_id} not found")
            session.expunge(item)
            return item

    def delete(self, item_id: int) -> None:
        """Delete an item: its image in that modality, from SQL and from the indexes, for every model
        version that embedded it (so that activating another version does not bring it back); the
        changed loaded indexes are saved.

        Raises:
            NotFoundError: no item with this id.
        """
        if not is_item_id(item_id):
            raise NotFoundError(f"gallery item {item_id} not found")
        ctx = self._ctx
        with ctx.lock:
            ctx.refresh()
            with ctx.session() as session:
                item = ctx.repository.get(session=session, id=item_id)
                if item is None:
                    raise NotFoundError(f"gallery item {item_id} not found")
                modality, sha256 = parse_modality(item.modality), str(item.sha256)
                rows = (
                    ctx.registry.rows_for_keys(session=session, keys=[(sha256, modality)])
                    if ctx.registry is not None
                    else [(item_id, str(item.model_version))]
                )
            # The crop goes with the last item that holds it (journalled: a crash cannot orphan it).
            with ctx.crop_transaction([sha256]), ctx.session() as session:
                if ctx.repository.delete_many(session=session, ids=[i for i, _ in rows]) == 0:
                    raise NotFoundError(f"gallery item {item_id} not found")
                session.commit()
            for row_id, version in rows:
                index = ctx.store.loaded_index(version, modality)
                if index is not None and index.remove(np.asarray([row_id], dtype=np.int64)):
                    ctx.store.save(version, modality)

    def crop(self, item_id: int) -> tuple[bytes, str, str]:
        """The stored crop of an item: ``(bytes, media type, sha256)``.

        Raises:
            NotFoundError: no item with this id, or its crop is not stored (crop store off, or an item
                stored before crops were kept).
        """
        item = self.get(item_id)
        data = self._ctx.crops.read(str(item.sha256)) if self._ctx.crops is not None else None
        if data is None:
            raise NotFoundError(f"no stored crop for gallery item {item_id}")
        from vireid.index import sniff_media_type

        return data, sniff_media_type(data), str(item.sha256)

    def stats(self) -> GalleryStatsResult:
        """Counts per (camera, modality) of the items embedded by the loaded model."""
        with self._ctx.session() as session:
            rows = self._ctx.repository.stats(session=session, model_version=self._ctx.model_version)
        return GalleryStatsResult(self._ctx.model_version, _stats_rows(rows))


def _failure(record: IngestRecord, exc: Exception) -> IngestOutcome:
    reason = exc.detail if isinstance(exc, ServiceError) else f"cannot read: {exc}"
    logger.warning("skipping %s", reason)
    return IngestOutcome(record.source, "failed", reason=reason)


def _stats_rows(rows: Mapping[tuple[str, str], int]) -> list[tuple[str, str, int]]:
    return sorted((str(camera), str(modality), int(count)) for (camera, modality), count in rows.items())


def _new_item(record: IngestRecord, sha256: str) -> NewItem:
    """The repository's item for a record, its metadata checked against :mod:`vireid.api._bounds`.

    Raises:
        InvalidInputError: metadata out of bounds (a camera over 64 characters, a control character in
            a text field, a capture time outside the accepted range, ...).
    """
    from vireid.index import NewItem

    source = record.source
    where = source if source.isprintable() and len(source) <= 200 else repr(source[:200])
    try:
        check_text(record.camera, name="camera", max_chars=MAX_CAMERA_CHARS)
        if record.track_id is not None:
            check_text(record.track_id, name="track_id", max_chars=MAX_TRACK_ID_CHARS)
        check_text(record.source, name="source", max_chars=MAX_SOURCE_CHARS)
        return NewItem(
            camera=record.camera,
            modality=record.modality,
            captured_at=check_datetime(record.captured_at, name="captured_at"),
            track_id=record.track_id,
            source=record.source,
            sha256=sha256,
        )
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc.detail}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {exc}") from exc
