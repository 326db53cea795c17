"""The loaded state the services work on: the active model's embedder, SQL sessions, gallery indexes,
the model registry and the write lock.

The HTTP app builds one :class:`ServiceContext` in its lifespan and keeps it on ``app.state``; the
``ingest``, ``search`` and ``reindex`` commands build one for the duration of the command. All work on
the same data directory, so a command run while the server is up is picked up by the server before its
next search (:meth:`ServiceContext.refresh`).

Model versions: every exported model the data directory knows is registered in SQL
(:class:`vireid.index.ModelRegistry`) with its files under ``<data_dir>/models/<version>``; one is
active. ``ServiceContext.embedder`` is the active model's embedder; a request reads it once and derives
the version, dimension and indexes from that one object, so switching the active model
(:meth:`ServiceContext.activate`) never mixes two models inside a request.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vireid.api.services._batching import BatchingEmbedder, BatchMetrics, batching_embedder
from vireid.api.services._budget import PixelBudget
from vireid.api.settings import MODALITIES, Modality, Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from vireid.index import CropStore, GalleryRepository, IndexBackend, ModelRegistry, StoreIndex
    from vireid.serving.runtime import Embedder

__all__ = ["MODELS_DIRNAME", "EmbedderLoader", "ServiceContext", "model_version_of", "open_context"]

#: Registered model files live in ``<data_dir>/models/<version>``.
MODELS_DIRNAME = "models"

#: Builds the embedder of an exported model folder.
EmbedderLoader = Callable[[Path], "Embedder"]


def model_version_of(embedder: Embedder) -> str:
    """The model version an embedder's manifest names."""
    return str(embedder.manifest.model_version)


logger = logging.getLogger(__name__)

#: Seconds :meth:`ServiceContext.close` waits for a stopped background index build (FAISS's training
#: cannot be interrupted; the build thread is a daemon and ends with the process).
BUILD_STOP_TIMEOUT_S: Final = 5.0


@dataclass
class ServiceContext:
    """Everything a request or a command needs, loaded once.

    Attributes:
        settings: the settings it was opened with.
        embedder: the active model's runtime embedder (architecture Contract 4); replaced as a whole by
            :meth:`activate`, so read it once per request.
        sessions: SQLAlchemy session factory for the gallery database.
        store: the gallery indexes, one per (model version, modality): FAISS files or Milvus
            collections (``settings.index_backend``).
        repository: SQL access; its methods take a session and never commit (house-style §26).
        engine: the database engine, disposed by :meth:`close`.
        lock: serialises every change to SQL + indexes in this process.
        crops: the crop store (None when ``settings.store_crops`` is false).
        registry: the model registry (SQL).
        loader: builds the embedder of a registered model's folder (default ``load_embedder`` with the
            settings' backend and device).
        decode_budget: decoded pixels held at once by the process (``settings.max_decode_pixels``);
            every decode reserves from it until its images are embedded.
        embed_metrics: observer of the embed batcher (``/metrics``); every activated embedder is
            wrapped in a :class:`~vireid.api.services._batching.BatchingEmbedder` (``settings.embed_*``).
    """

    settings: Settings
    embedder: Embedder
    sessions: sessionmaker[Session]
    store: IndexBackend
    repository: GalleryRepository
    engine: Engine | None = None
    crops: CropStore | None = None
    registry: ModelRegistry | None = None
    loader: EmbedderLoader | None = None
    embed_metrics: BatchMetrics | None = None
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

    def index(self, modality: Modality) -> StoreIndex:
        """The loaded index of ``modality`` for the current model."""
        return self.store.get(self.model_version, modality, dim=self.dim)

    def index_of(self, embedder: Embedder, modality: Modality) -> StoreIndex:
        """The loaded index of ``modality`` for the model of ``embedder`` (a request's snapshot)."""
        return self.store.get(model_version_of(embedder), modality, dim=int(embedder.manifest.embedding_dim))

    def model_dir(self, version: str) -> Path:
        """Where a registered version's files are (``<data_dir>/models/<version>``)."""
        from vireid.index._validation import check_model_version

        return self.settings.data_dir.expanduser().resolve() / MODELS_DIRNAME / check_model_version(version)

    def load_version(self, version: str) -> Embedder:
        """Build the embedder of a registered version from its files.

        Raises:
            FileNotFoundError: its folder is missing.
        """
        folder = self.model_dir(version)
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(f"model {version}: no manifest.json in {folder}")
        return (self.loader or _default_loader(self.settings))(folder)

    def register(self, embedder: Embedder, *, files: Path | None = None) -> str:
        """Register ``embedder``'s model (copying its exported folder ``files`` to
        ``<data_dir>/models/<version>`` when given); already registered versions are left as they are.

        Returns:
            The model version.
        """
        version = model_version_of(embedder)
        if files is not None and copy_model_files(files, self.model_dir(version)):
            logger.info("model %s: files copied to %s", version, self.model_dir(version))
        if self.registry is not None:
            with self.session() as session:
                self.registry.register(session=session, manifest=manifest_fields(embedder))
                session.commit()
        return version

    def activate(self, embedder: Embedder) -> None:
        """Make ``embedder``'s model the active one: load (or rebuild) its indexes, record it as active
        in the registry, then switch :attr:`embedder`. Requests already running finish on the old
        model; changes wait for the write lock, so none straddles the switch.

        The new :attr:`embedder` is ``embedder`` behind the dynamic batcher. The old one's batcher is not
        closed (requests holding it still finish on it); its thread ends once it has been idle a while."""
        if not isinstance(embedder, BatchingEmbedder):
            embedder = batching_embedder(embedder, self.settings, metrics=self.embed_metrics)
        version = model_version_of(embedder)
        dim = int(embedder.manifest.embedding_dim)
        with self.lock, self.session() as session:
            for modality in MODALITIES:
                index = self.store.load_or_rebuild(
                    version, modality, dim=dim, session=session, repository=self.repository
                )
                logger.info("index %s/%s: %d vectors", version, modality, len(index))
            if self.registry is not None:
                self.registry.set_active(session=session, version=version)
                session.commit()
            previous = model_version_of(self.embedder)
            self.embedder = embedder
        if previous != version:
            logger.info("active model: %s (was %s)", version, previous)

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

    def close(self, *, finish_builds: bool = False) -> None:
        """Stop the active embedder's batcher (requests still queued fail with 503), stop or finish the
        background index builds, and release the database engine.

        Args:
            finish_builds: wait for running index builds to finish and be saved (``vireid ingest`` and
                ``vireid reindex``, which exit next); otherwise they are stopped (waiting at most
                :data:`BUILD_STOP_TIMEOUT_S` for one in FAISS's training) and run again at the next start.
        """
        if isinstance(self.embedder, BatchingEmbedder):
            self.embedder.close()
        self.store.stop_builds(finish=finish_builds, timeout=None if finish_builds else BUILD_STOP_TIMEOUT_S)
        if self.engine is not None:
            self.engine.dispose()


def _default_loader(settings: Settings) -> EmbedderLoader:
    def load(folder: Path) -> Embedder:
        from vireid.serving.runtime import GpuOptions, load_embedder

        return load_embedder(
            folder,
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

    return load


def manifest_fields(embedder: Embedder) -> dict[str, Any]:
    """The registry fields of an embedder's manifest (the whole manifest when it can say so)."""
    manifest = embedder.manifest
    to_dict = getattr(manifest, "to_dict", None)
    fields: dict[str, Any] = dict(to_dict()) if callable(to_dict) else {}
    created = getattr(manifest, "created_at", None)
    fields.update(
        model_version=str(manifest.model_version),
        method=str(manifest.method),
        variant=str(getattr(manifest, "variant", "unknown")),
        embedding_dim=int(manifest.embedding_dim),
        precision=str(getattr(manifest, "precision", "fp32")),
        created_at=created.isoformat() if isinstance(created, datetime) else created,
    )
    return fields


def copy_model_files(model_dir: Path, target: Path) -> bool:
    """Copy an exported model folder to ``target`` (whole, via a temp folder and a rename).

    Returns:
        False when ``target`` already holds a model (nothing copied).
    """
    if (target / "manifest.json").is_file():
        return False
    if model_dir.resolve() == target.resolve():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
    shutil.copytree(model_dir, staging)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "manifest.json").is_file():
            raise
        return False
    return True


def open_context(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    loader: EmbedderLoader | None = None,
    embed_metrics: BatchMetrics | None = None,
) -> ServiceContext:
    """Migrate and open the database, load the active model's embedder and both of its gallery indexes.

    Which model: the version the registry marks active (its files in ``<data_dir>/models/<version>``);
    when none is active yet, the exported model in ``settings.resolved_model_dir``, which is registered
    (files copied) and becomes active. When an active version exists and the model directory holds
    another one, that one is registered but not activated (logged): switching is
    :meth:`ServiceContext.activate` (``POST /models/{version}/activate``), and it persists.

    Temp files that an index save killed mid-write left behind (by this or another process that is
    gone) are removed first, and logged; so are the crops that a write killed between storing them and
    committing their rows left without a gallery item (:meth:`vireid.index.CropStore.recover`).

    Args:
        settings: data directory, database URL, model directory, index factory, backend, device and
            the GPU options (``cuda_device_id``, ``cudnn_conv_algo_search``, ``trt_*``).
        embedder: an already built embedder (tests, benchmarks): it becomes the active model.
        loader: builds an embedder from a model folder (tests); default ``load_embedder`` with the
            settings' backend, device and GPU options.
        embed_metrics: observer of the embed batcher's batch sizes and queue times (``/metrics``).

    Raises:
        FileNotFoundError: no model is active and the model directory has no exported model.
        ValueError: a malformed manifest or database URL.
    """
    from vireid.api.services._index_backend import open_index_store
    from vireid.index import (
        CropStore,
        GalleryRepository,
        ModelRegistry,
        make_engine,
        make_sessionmaker,
        upgrade_database,
    )

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    upgrade_database(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    registry = ModelRegistry()
    try:
        chosen, files, others = _choose_model(settings, sessions, registry, embedder=embedder, loader=loader)
        context = ServiceContext(
            settings=settings,
            embedder=chosen,
            sessions=sessions,
            store=open_index_store(settings, sessions),
            repository=GalleryRepository(),
            engine=engine,
            crops=CropStore(settings.data_dir) if settings.store_crops else None,
            registry=registry,
            loader=loader,
            embed_metrics=embed_metrics,
        )
    except BaseException:
        engine.dispose()
        raise
    try:
        context.store.enable_builds(sessions=sessions, repository=context.repository, write_lock=context.lock)
        context.register(chosen, files=files)
        for other, folder in others:
            context.register(other, files=folder)
        context.store.remove_stale_temp_files()
        if context.crops is not None:
            context.crops.remove_stale_temp_files()
            context.crops.recover(context.referenced_sha256)
        context.activate(chosen)
    except BaseException:
        context.close()
        raise
    return context


def _choose_model(
    settings: Settings,
    sessions: sessionmaker[Session],
    registry: ModelRegistry,
    *,
    embedder: Embedder | None,
    loader: EmbedderLoader | None,
) -> tuple[Embedder, Path | None, list[tuple[Embedder, Path]]]:
    """The embedder to start with, the folder its files come from (None: already registered, or an
    injected embedder), and other models to register without activating them (a configured model
    directory that is not the active version)."""
    if embedder is not None:
        return embedder, None, []
    load = loader or _default_loader(settings)
    configured = settings.resolved_model_dir
    with sessions() as session:
        active = registry.active(session=session)
        active_version = None if active is None else str(active.version)
    if active_version is not None:
        folder = settings.data_dir.expanduser().resolve() / MODELS_DIRNAME / active_version
        if (folder / "manifest.json").is_file():
            chosen = load(folder)
            if (configured / "manifest.json").is_file() and _folder_version(configured) != active_version:
                other = load(configured)
                if model_version_of(other) != active_version:
                    logger.warning(
                        "%s holds model %s, but the active model of this data dir is %s: %s is registered, "
                        "not activated (POST /models/%s/activate switches)",
                        configured,
                        model_version_of(other),
                        active_version,
                        model_version_of(other),
                        model_version_of(other),
                    )
                    return chosen, None, [(other, configured)]
            return chosen, None, []
        logger.warning(
            "active model %s has no files in %s: starting with %s", active_version, folder, configured
        )
    chosen = load(configured)
    return chosen, configured if (configured / "manifest.json").is_file() else None, []


def _folder_version(folder: Path) -> str | None:
    """The ``model_version`` a model folder's manifest names (None when unreadable), without loading it."""
    import json

    try:
        return str(json.loads((folder / "manifest.json").read_text())["model_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
