"""The loaded state the services work on: embedder, SQL sessions, gallery indexes and the write lock.

The HTTP app builds one :class:`ServiceContext` in its lifespan and keeps it on ``app.state``; the
``ingest`` and ``search`` commands build one for the duration of the command. Both work on the same data
directory, so a command run while the server is up is picked up by the server before its next search
(:meth:`ServiceContext.refresh`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vireid.api.services._budget import PixelBudget
from vireid.api.settings import MODALITIES, Modality, Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from vireid.index import CropStore, GalleryRepository, IndexStore, SharedIndex
    from vireid.serving.runtime import Embedder

__all__ = ["ServiceContext", "open_context"]

logger = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """Everything a request or a command needs, loaded once.

    Attributes:
        settings: the settings it was opened with.
        embedder: runtime embedder (architecture Contract 4).
        sessions: SQLAlchemy session factory for the gallery database.
        store: the gallery indexes, one per (model version, modality).
        repository: SQL access; its methods take a session and never commit (house-style §26).
        engine: the database engine, disposed by :meth:`close`.
        lock: serialises every change to SQL + indexes in this process.
        crops: the crop store (None when ``settings.store_crops`` is false).
        decode_budget: decoded pixels held at once by the process (``settings.max_decode_pixels``);
            every decode reserves from it until its images are embedded.
    """

    settings: Settings
    embedder: Embedder
    sessions: sessionmaker[Session]
    store: IndexStore
    repository: GalleryRepository
    engine: Engine | None = None
    crops: CropStore | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    decode_budget: PixelBudget = field(init=False)

    def __post_init__(self) -> None:
        self.decode_budget = PixelBudget(self.settings.max_decode_pixels)

    @property
    def model_version(self) -> str:
        """Version of the loaded model; only gallery items embedded by it are searched."""
        return str(self.embedder.manifest.model_version)

    @property
    def method(self) -> str:
        """Training method of the loaded model."""
        return str(self.embedder.manifest.method)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.embedder.manifest.embedding_dim)

    def index(self, modality: Modality) -> SharedIndex:
        """The loaded index of ``modality`` for the current model."""
        return self.store.get(self.model_version, modality, dim=self.dim)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that is rolled back unless the caller committed, and always closed."""
        session = self.sessions()
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def refresh(self, *, wait: bool = True) -> None:
        """Pick up index files written by another process (e.g. ``vireid ingest``) since the last look.

        A changed index goes through ``load_or_rebuild``, so it is checked against SQL. Cheap when
        nothing changed (one ``stat`` per index).

        Args:
            wait: wait for the write lock. Searches pass False: while a change is under way in this
                process they skip the check and search the in-memory index (the writer refreshes first).
        """
        if not self.lock.acquire(blocking=wait):
            return
        try:
            with self.session() as session:
                self.store.reload_if_changed(session=session, repository=self.repository)
        finally:
            self.lock.release()

    def referenced_sha256(self, sha256s: set[str]) -> set[str]:
        """The subset of ``sha256s`` that some gallery item (any model version or modality) holds."""
        with self.session() as session:
            return self.repository.referenced_sha256(session=session, sha256s=sha256s)

    @contextmanager
    def crop_transaction(self, sha256s: Iterable[str]) -> Iterator[None]:
        """Journal the crops a write may add or orphan (see :class:`vireid.index.CropStore`); a no-op
        without a crop store."""
        if self.crops is None:
            yield
            return
        with self.crops.transaction(sha256s, self.referenced_sha256):
            yield

    def load_indexes(self) -> None:
        """Load (or rebuild from the stored embeddings) both modality indexes of the current model."""
        with self.lock, self.session() as session:
            for modality in MODALITIES:
                index = self.store.load_or_rebuild(
                    self.model_version, modality, dim=self.dim, session=session, repository=self.repository
                )
                logger.info("index %s/%s: %d vectors", self.model_version, modality, len(index))

    def save(self, modality: Modality) -> None:
        """Write the index of ``modality`` to disk (temp file + rename, done by the store)."""
        self.store.save(self.model_version, modality)

    def save_changed(self) -> None:
        """Save the indexes changed in memory since their last save (shutdown)."""
        with self.lock:
            self.refresh()
            self.store.save_all(only_dirty=True)

    def close(self) -> None:
        """Release the database engine."""
        if self.engine is not None:
            self.engine.dispose()


def open_context(settings: Settings, *, embedder: Embedder | None = None) -> ServiceContext:
    """Load the embedder, migrate and open the database, and load both gallery indexes.

    Temp files that an index save killed mid-write left behind (by this or another process that is
    gone) are removed first, and logged; so are the crops that a write killed between storing them and
    committing their rows left without a gallery item (:meth:`vireid.index.CropStore.recover`).

    Args:
        settings: data directory, database URL, model directory, index factory, backend, device and
            the GPU options (``cuda_device_id``, ``cudnn_conv_algo_search``, ``trt_*``).
        embedder: an already built embedder (tests, benchmarks); default
            ``load_embedder(settings.resolved_model_dir, backend=..., device=..., gpu=GpuOptions(...))``.

    Raises:
        FileNotFoundError: the model directory has no exported model.
        ValueError: a malformed manifest or database URL.
    """
    from vireid.index import (
        CropStore,
        GalleryRepository,
        IndexStore,
        make_engine,
        make_sessionmaker,
        upgrade_database,
    )

    if embedder is None:
        from vireid.serving.runtime import GpuOptions, load_embedder

        embedder = load_embedder(
            settings.resolved_model_dir,
            backend=settings.backend,
            device=settings.device,
            batch_size=settings.batch_size,
            gpu=GpuOptions(
                device_id=settings.cuda_device_id,
                cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
                trt_fp16=settings.trt_fp16,
                trt_cache_dir=settings.resolved_trt_engine_cache_dir,
                trt_workspace_gib=settings.trt_workspace_gib,
            ),
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    upgrade_database(url)
    engine = make_engine(url)
    context = ServiceContext(
        settings=settings,
        embedder=embedder,
        sessions=make_sessionmaker(engine),
        store=IndexStore(settings.data_dir, factory=settings.index_factory),
        repository=GalleryRepository(),
        engine=engine,
        crops=CropStore(settings.data_dir) if settings.store_crops else None,
    )
    try:
        context.store.remove_stale_temp_files()
        if context.crops is not None:
            context.crops.remove_stale_temp_files()
            context.crops.recover(context.referenced_sha256)
        context.load_indexes()
    except BaseException:
        context.close()
        raise
    return context
