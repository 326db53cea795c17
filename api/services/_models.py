"""Model versions as first-class objects (issue #13, items 2-3): list, register, re-embed the gallery
with a new version (``vireid reindex``), activate it in the running service, delete an old one.

A version is *complete* when it holds every gallery image (each distinct ``(sha256, modality)`` that
any version holds); only a complete version can be activated, so switching never hides part of the
gallery. Re-embedding reads the crops from the crop store (:class:`vireid.index.CropStore`); an image
whose crop was never stored (ingested with ``VIREID_STORE_CROPS=false`` or before crops were kept) is
reported and keeps the version incomplete until it is ingested again.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vireid.api.errors import ConflictError, NotFoundError, ServiceError
from vireid.api.services._budget import plan_chunks
from vireid.api.services._context import ServiceContext, model_version_of
from vireid.api.services._images import decode, image_pixels
from vireid.api.settings import MODALITIES, Modality

if TYPE_CHECKING:
    from PIL import Image

    from vireid.index import ModelRegistry, ReindexSource
    from vireid.serving.runtime import Embedder

__all__ = ["ModelService", "ModelSummary", "ReindexReport"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSummary:
    """One registered version: its manifest fields, its share of the gallery, whether it is active."""

    version: str
    method: str
    variant: str
    embedding_dim: int
    precision: str
    exported_at: datetime | None
    registered_at: datetime | None
    active: bool
    gallery: dict[str, int]
    complete: bool


@dataclass
class ReindexReport:
    """What one ``reindex`` run did."""

    version: str
    added: int = 0
    no_crop: int = 0
    failed: list[str] = field(default_factory=list)
    complete: bool = False


class ModelService:
    """Lists, registers, re-embeds, activates and deletes model versions.

    Args:
        context: the loaded context (its registry, crop store, indexes and active model).
    """

    def __init__(self, context: ServiceContext) -> None:
        self._ctx = context
        self._loaded: dict[
            str, Embedder
        ] = {}  # embedders this service built, by version (register → reindex)

    @property
    def _registry(self) -> ModelRegistry:
        if self._ctx.registry is None:
            raise RuntimeError("this context has no model registry")
        return self._ctx.registry

    def summaries(self) -> tuple[dict[str, int], list[ModelSummary]]:
        """``(gallery images per modality that a complete version holds, one summary per version)``."""
        with self._ctx.session() as session:
            size = self._registry.gallery_size(session=session)
            counts = self._registry.counts(session=session)
            rows = self._registry.versions(session=session)
            summaries = [
                ModelSummary(
                    version=str(r.version),
                    method=r.method,
                    variant=r.variant,
                    embedding_dim=int(r.embedding_dim),
                    precision=r.precision,
                    exported_at=r.exported_at,
                    registered_at=r.registered_at,
                    active=bool(r.active),
                    gallery={m: counts.get(str(r.version), {}).get(m, 0) for m in MODALITIES},
                    complete=_complete(counts.get(str(r.version), {}), size),
                )
                for r in rows
            ]
        return {m: size.get(m, 0) for m in MODALITIES}, summaries

    def get(self, version: str) -> ModelSummary:
        """One version's summary.

        Raises:
            NotFoundError: not registered.
        """
        for summary in self.summaries()[1]:
            if summary.version == version:
                return summary
        raise NotFoundError(f"model version {version!r} is not registered")

    def register(self, model_dir: Path) -> str:
        """Register an exported model folder (files copied to ``<data_dir>/models/<version>``).

        Raises:
            FileNotFoundError: no exported model in ``model_dir``.
        """
        embedder = self._load(model_dir)
        version = self._ctx.register(embedder, files=model_dir)
        self._loaded[version] = embedder
        return version

    def activate(self, version: str) -> ModelSummary:
        """Switch the service to ``version``: requests in flight finish on the old model.

        Raises:
            NotFoundError: not registered.
            ConflictError: its gallery is incomplete (run ``vireid reindex`` first).
        """
        summary = self.get(version)
        if summary.active and model_version_of(self._ctx.embedder) == version:
            return summary
        size = self.summaries()[0]
        if not summary.complete:
            held = ", ".join(f"{summary.gallery[m]} of {size[m]} {m}" for m in MODALITIES)
            raise ConflictError(
                f"model {version} holds {held} gallery images: run `vireid reindex --model "
                f"{self._ctx.model_dir(version)}` until it is complete, then activate it"
            )
        self._ctx.activate(self._ctx.load_version(version))
        return self.get(version)

    def delete(self, version: str) -> int:
        """Delete a version that is not active: its gallery rows, index files and model files. Crops
        stay while another version's rows hold them.

        Returns:
            The number of gallery rows deleted.

        Raises:
            NotFoundError: not registered.
            ConflictError: it is the active version.
        """
        summary = self.get(version)
        ctx = self._ctx
        if summary.active or model_version_of(ctx.embedder) == version:
            raise ConflictError(f"model {version} is active: activate another version before deleting it")
        from sqlalchemy import select

        from vireid.index import GalleryItem

        with ctx.lock:
            with ctx.session() as session:
                digests = set(
                    session.scalars(select(GalleryItem.sha256).where(GalleryItem.model_version == version))
                )
            with ctx.crop_transaction(digests), ctx.session() as session:
                deleted = self._registry.unregister(session=session, version=version)
                session.commit()
            ctx.store.remove_files(version)
            shutil.rmtree(ctx.model_dir(version), ignore_errors=True)
        logger.info("model %s deleted (%d gallery rows)", version, deleted)
        return deleted

    def reindex(
        self, version: str, *, batch_size: int | None = None, progress: Callable[[int], None] | None = None
    ) -> ReindexReport:
        """Embed every gallery image that ``version`` lacks, from the stored crops, into its indexes.

        Batched (one SQL transaction and one index save per batch), resumable after a kill (what is
        committed is skipped next time) and safe beside a running service (it writes only ``version``'s
        rows and index files; the service reads them when it activates the version).

        Args:
            version: a registered version.
            batch_size: images per batch; default ``settings.batch_size``.
            progress: called with the number of images handled after each batch.

        Raises:
            NotFoundError: not registered.
        """
        ctx = self._ctx
        self.get(version)
        size = batch_size or ctx.settings.batch_size
        embedder = self._loaded.get(version) or ctx.load_version(version)
        dim = int(embedder.manifest.embedding_dim)
        with ctx.lock, ctx.session() as session:
            for modality in MODALITIES:
                ctx.store.load_or_rebuild(
                    version, modality, dim=dim, session=session, repository=ctx.repository
                )
        report = ReindexReport(version=version)
        after: tuple[str, str] | None = None
        while True:
            with ctx.session() as session:
                page = self._registry.missing(session=session, version=version, limit=size, after=after)
            if not page:
                break
            after = (page[-1].sha256, page[-1].modality)
            for modality in MODALITIES:
                group = [s for s in page if s.modality == modality]
                if group:
                    self._embed_and_store(group, modality, embedder=embedder, version=version, report=report)
            if progress is not None:
                progress(len(page))
        report.complete = self.get(version).complete
        logger.info(
            "reindex %s: %d added, %d without a stored crop, %d failed; complete: %s",
            version,
            report.added,
            report.no_crop,
            len(report.failed),
            report.complete,
        )
        return report

    def remaining(self, version: str) -> int:
        """Gallery images ``version`` still lacks (for a progress bar's total)."""
        size, summaries = self.summaries()
        summary = next((s for s in summaries if s.version == version), None)
        if summary is None:
            raise NotFoundError(f"model version {version!r} is not registered")
        return sum(size.values()) - sum(summary.gallery.values())

    def _load(self, model_dir: Path) -> Embedder:
        from vireid.api.services._context import _default_loader

        return (self._ctx.loader or _default_loader(self._ctx.settings))(model_dir)

    def _embed_and_store(
        self,
        group: Sequence[ReindexSource],
        modality: Modality,
        *,
        embedder: Embedder,
        version: str,
        report: ReindexReport,
    ) -> None:
        from vireid.index import DuplicateItemError, NewItem

        ctx, settings = self._ctx, self._ctx.settings
        ready: list[tuple[ReindexSource, bytes, int]] = []
        for source in group:
            data = ctx.crops.read(source.sha256) if ctx.crops is not None else None
            if data is None:
                report.no_crop += 1
                continue
            try:
                pixels = image_pixels(data, max_pixels=settings.max_image_pixels, source=source.sha256)
            except ServiceError as exc:
                report.failed.append(exc.detail)
                continue
            ready.append((source, data, pixels))
        items: list[NewItem] = []
        vectors: list[np.ndarray] = []
        for chunk in plan_chunks(
            ready, lambda r: r[2], max_pixels=settings.max_decode_pixels, max_items=settings.batch_size
        ):
            with ctx.decode_budget.reserve(sum(r[2] for r in chunk)):
                images: list[Image.Image] = []
                kept: list[ReindexSource] = []
                for source, data, _ in chunk:
                    try:
                        images.append(
                            decode(data, max_pixels=settings.max_image_pixels, source=source.sha256)
                        )
                    except ServiceError as exc:
                        report.failed.append(exc.detail)
                        continue
                    kept.append(source)
                if images:
                    vectors.extend(np.ascontiguousarray(embedder.embed(images, modality), dtype=np.float32))
                    items.extend(
                        NewItem(
                            camera=s.camera,
                            modality=modality,
                            captured_at=s.captured_at,
                            track_id=s.track_id,
                            source=s.source,
                            sha256=s.sha256,
                        )
                        for s in kept
                    )
                del images
        if not items:
            return
        matrix = np.stack(vectors).astype(np.float32, copy=False)
        index = ctx.store.get(version, modality, dim=int(embedder.manifest.embedding_dim))
        with ctx.lock, ctx.session() as session:
            try:
                ids = np.asarray(
                    ctx.repository.add_items(
                        session=session, items=items, vectors=matrix, model_version=version
                    ),
                    dtype=np.int64,
                )
                session.commit()
            except DuplicateItemError:  # another reindex of this version got there first
                session.rollback()
                return
            index.add(ids, matrix)
        ctx.store.save(version, modality)
        report.added += len(items)


def _complete(held: dict[str, int], size: dict[str, int]) -> bool:
    return all(held.get(m, 0) >= size.get(m, 0) for m in MODALITIES)
