"""One FAISS index per (model version, modality), saved crash-safely and checked against SQL."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from vireid.index._atomic import atomic_write_bytes, remove_stale_temp_files
from vireid.index._faiss_index import DEFAULT_FACTORY, FaissGalleryIndex
from vireid.index._manifest import MANIFEST_FORMAT_VERSION, IndexManifest
from vireid.index._protocol import CorruptIndexError
from vireid.index._repository import GalleryRepository
from vireid.index._training import DEFAULT_RETRAIN_FACTOR, DEFAULT_TRAIN_BYTES
from vireid.index._validation import check_metric, check_modality, check_model_version, ids_digest

logger = logging.getLogger(__name__)

#: Folder under the data directory that holds ``<model_version>/<modality>.faiss`` + ``.json``.
INDEXES_DIRNAME: Final = "indexes"
# A reader may meet an index file and a manifest from two different saves; it retries this often.
_READ_ATTEMPTS: Final = 3
_READ_RETRY_DELAY_S: Final = 0.05

IndexKey = tuple[str, str]


class _DiskState(NamedTuple):
    """What the store last saw on disk for one index: manifest stat and index digest."""

    mtime_ns: int
    size: int
    index_sha256: str


class SharedIndex:
    """A :class:`FaissGalleryIndex` behind an ``RLock``, shared by threads of one process.

    Every call takes the lock, so searches never see a half-applied add or remove. The wrapped index
    can be swapped (reload or rebuild) while callers keep this object. While a background build runs
    (:meth:`IndexStore.build_if_needed`), adds and removes are also logged and replayed on the new index
    when it is swapped in.

    Args:
        index: the index to share.
        model_version: model version it belongs to.
        modality: modality it belongs to.
    """

    def __init__(self, index: FaissGalleryIndex, *, model_version: str, modality: str) -> None:
        self.lock = threading.RLock()
        self.model_version = model_version
        self.modality = modality
        self._index = index
        self._generation = 0
        self._saved_generation = 0
        self._log: list[tuple[str, Any, Any]] | None = None

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return self._index.dim

    @property
    def metric(self) -> str:
        """``"ip"`` or ``"l2"``."""
        return self._index.metric

    @property
    def dirty(self) -> bool:
        """True when the index changed since it was loaded or saved."""
        with self.lock:
            return self._generation != self._saved_generation

    def __len__(self) -> int:
        with self.lock:
            return len(self._index)

    def __repr__(self) -> str:
        return f"SharedIndex({self.model_version!r}, {self.modality!r}, {self._index!r})"

    def ids(self) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids, ascending."""
        with self.lock:
            return self._index.ids()

    @property
    def factory(self) -> str:
        """The configured factory string."""
        return self._index.factory

    @property
    def built_factory(self) -> str:
        """The factory FAISS holds now (``IDMap2,Flat`` while a trainable factory is untrained)."""
        with self.lock:
            return self._index.built_factory

    def build_reason(self, *, retrain_factor: float = DEFAULT_RETRAIN_FACTOR) -> str | None:
        """See :meth:`FaissGalleryIndex.build_reason`."""
        with self.lock:
            return self._index.build_reason(retrain_factor=retrain_factor)

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        """Add ``(N,)`` ids and ``(N, D)`` float32 vectors; see :meth:`FaissGalleryIndex.add`."""
        with self.lock:
            self._index.add(ids, vectors)
            self._generation += 1
            if self._log is not None:
                self._log.append(("add", np.array(ids, dtype=np.int64), np.array(vectors, dtype=np.float32)))

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``(M,)`` ids; returns how many were removed."""
        with self.lock:
            removed = self._index.remove(ids)
            self._generation += int(removed > 0)
            if self._log is not None:
                self._log.append(("remove", np.array(ids, dtype=np.int64), None))
            return removed

    def search(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        allowed_ids: npt.ArrayLike | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``(scores (Q, k) float32, ids (Q, k) int64)``; see :meth:`FaissGalleryIndex.search`."""
        with self.lock:
            return self._index.search(vectors, k, allowed_ids=allowed_ids, nprobe=nprobe, ef_search=ef_search)

    def _snapshot(self) -> tuple[bytes, npt.NDArray[np.int64], int, FaissGalleryIndex]:
        with self.lock:
            return self._index.serialize(), self._index.ids(), self._generation, self._index

    def _start_log(self) -> None:
        with self.lock:
            self._log = []

    def _swap_built(self, built: FaissGalleryIndex) -> bool:
        """Replay the logged changes on ``built`` and swap it in; False when the index was replaced
        (reloaded) meanwhile, which voids the build."""
        with self.lock:
            log, self._log = self._log, None
            if log is None:
                return False
            for op, ids, vectors in log:
                if op == "add":
                    fresh = ~np.isin(ids, built.ids())  # rows the build already read from SQL
                    built.add(ids[fresh], vectors[fresh])
                else:
                    built.remove(ids)
            self._index = built
            self._generation += 1
            return True

    def _stop_log(self) -> None:
        with self.lock:
            self._log = None

    def _mark_saved(self, generation: int) -> None:
        with self.lock:
            self._saved_generation = generation

    def _replace(self, index: FaissGalleryIndex, *, dirty: bool) -> None:
        with self.lock:
            self._index = index
            self._log = None  # a build running from the replaced state is void
            self._generation += 1
            if not dirty:
                self._saved_generation = self._generation


class IndexStore:
    """The gallery indexes of one data directory, one per ``(model_version, modality)``.

    Files: ``<data_dir>/indexes/<model_version>/<modality>.faiss`` and ``<modality>.json`` (an
    :class:`IndexManifest`). Saving writes both through temp files and ``os.replace`` (index first,
    manifest last, both fsynced), so a crash leaves either the old pair or a pair whose manifest does
    not match the index file, which :meth:`load_or_rebuild` detects and repairs from SQL. SQL is the
    source of truth: a service starts with :meth:`load_or_rebuild`, writes rows and index entries in
    the same unit of work, commits, then calls :meth:`save`.

    **Approximate factories** (see :class:`FaissGalleryIndex`): an index of a factory that needs
    training starts exact and is built (trained on a reservoir sample of the stored embeddings) once it
    holds enough vectors, and rebuilt when it has grown ``retrain_factor`` times or holds too many
    tombstones. With :meth:`enable_builds`, every :meth:`save` and load checks this and builds in a
    background thread from SQL while searches and writes go on against the current index; the writes
    made meanwhile are replayed on the new index before it is swapped in and saved.

    Args:
        data_dir: service data directory.
        factory: FAISS factory string for new indexes (must start with ``IDMap``).
        metric: ``"ip"`` or ``"l2"``.
        nprobe: default IVF lists probed per search (None: FAISS's default).
        ef_search: default HNSW beam per search (None: FAISS's default).
        k_factor: refine factor of refined factories (``...,RFlat``; None: FAISS's default, 1).
        retrain_factor: growth (> 1) after which a trained index is trained again.
        max_train_bytes: memory cap of a training sample (float32 bytes).
        gpu_device: GPU ordinal whose copies answer unfiltered searches (None: CPU only; see
            :meth:`FaissGalleryIndex.use_gpu` and :func:`vireid.index.resolve_index_device`).

    Raises:
        ValueError: on a bad factory, metric, nprobe, ef_search or retrain_factor.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        factory: str = DEFAULT_FACTORY,
        metric: str = "ip",
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: float | None = None,
        retrain_factor: float = DEFAULT_RETRAIN_FACTOR,
        max_train_bytes: int = DEFAULT_TRAIN_BYTES,
        gpu_device: int | None = None,
    ) -> None:
        self._root = Path(data_dir).expanduser().resolve() / INDEXES_DIRNAME
        self._gpu_device = gpu_device
        self._factory = factory
        self._metric = check_metric(metric)
        if not isinstance(factory, str) or not factory.startswith("IDMap"):
            raise ValueError(f"factory must start with 'IDMap' or 'IDMap2', got {factory!r}")
        if not retrain_factor > 1:
            raise ValueError(f"retrain_factor must be > 1, got {retrain_factor}")
        self._options: dict[str, Any] = {
            "factory": factory,
            "metric": self._metric,
            "nprobe": nprobe,
            "ef_search": ef_search,
            "k_factor": k_factor,
            "max_train_bytes": max_train_bytes,
        }
        # The knobs are checked now; the factory when the first index is made, at the model's width
        # (a PQ factory needs a width its sub-quantisers divide, which no placeholder width can know).
        FaissGalleryIndex(1, nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        self._retrain_factor = float(retrain_factor)
        self._lock = threading.RLock()
        self._indexes: dict[IndexKey, SharedIndex] = {}
        self._save_locks: dict[IndexKey, threading.Lock] = {}
        self._disk: dict[IndexKey, _DiskState] = {}
        self._builder: _Builder | None = None
        self._builds: dict[IndexKey, threading.Thread] = {}
        self._stop_builds = threading.Event()

    def enable_builds(
        self,
        *,
        sessions: Callable[[], Session],
        repository: GalleryRepository,
        write_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        """Build approximate indexes in the background when :meth:`FaissGalleryIndex.build_reason` asks.

        Args:
            sessions: opens a new SQL session (the build reads the stored embeddings in its thread).
            repository: reads the embeddings.
            write_lock: held by the writers of this process around "add to the index, commit SQL"; the
                build takes it while it starts logging changes and opens its SQL snapshot, so no write is
                half done at that instant.
        """
        self._builder = _Builder(sessions, repository, write_lock)
        self._stop_builds.clear()

    def build_if_needed(self, model_version: str, modality: str, *, wait: bool = False) -> str | None:
        """Start a background build of a loaded index when it needs one (see :meth:`enable_builds`).

        Args:
            model_version: model version of the index.
            modality: modality of the index.
            wait: wait for the build to finish (a CLI ingest that exits after it).

        Returns:
            The reason (``"train"``, ``"retrain"``, ``"compact"``) when a build runs now, else None.
        """
        key = (model_version, modality)
        builder = self._builder
        shared = self.loaded_index(*key)
        if builder is None or shared is None or self._stop_builds.is_set():
            return None
        reason = shared.build_reason(retrain_factor=self._retrain_factor)
        with self._lock:
            thread = self._builds.get(key)
            running = thread is not None and thread.is_alive()
            if reason is not None and not running:
                thread = threading.Thread(
                    target=self._build_and_swap,
                    args=(key, shared, builder, reason),
                    name=f"vireid-index-build-{model_version}-{modality}",
                    daemon=True,
                )
                self._builds[key] = thread
                thread.start()
                running = True
        if wait and thread is not None:
            thread.join()
        return reason if running else None

    def stop_builds(self, *, finish: bool = False, timeout: float | None = None) -> None:
        """Stop (``finish=False``) or finish the running background builds, and wait for them.

        A stopped build leaves the current index in place; the next start or save asks again.
        """
        if not finish:
            self._stop_builds.set()
        with self._lock:
            threads = list(self._builds.values())
        for thread in threads:
            thread.join(timeout)

    def _build_and_swap(self, key: IndexKey, shared: SharedIndex, builder: _Builder, reason: str) -> None:
        started = time.perf_counter()
        logger.info("building index %s/%s in the background (%s): %d vectors", *key, reason, len(shared))
        try:
            with builder.sessions() as session:
                with builder.write_lock or nullcontext():
                    shared._start_log()
                    builder.repository.count(session=session, model_version=key[0], modality=key[1])
                built = FaissGalleryIndex.build(
                    shared.dim,
                    lambda: builder.repository.iter_embeddings(
                        session=session, model_version=key[0], modality=key[1]
                    ),
                    should_stop=self._stop_builds.is_set,
                    **self._options,
                )
        except InterruptedError:
            shared._stop_log()
            logger.info("index build %s/%s stopped", *key)
            return
        except Exception:
            shared._stop_log()
            logger.exception("index build %s/%s failed; the current index stays", *key)
            return
        built.use_gpu(self._gpu_device)
        if not shared._swap_built(built):
            logger.info("index %s/%s was reloaded during its build; build dropped", *key)
            return
        self.save(*key)
        logger.info(
            "built index %s/%s (%s, %s): %d vectors in %.1f s",
            *key,
            reason,
            built.built_factory,
            len(built),
            time.perf_counter() - started,
        )

    @property
    def root(self) -> Path:
        """The ``indexes`` folder."""
        return self._root

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temp files that a writer killed while saving an index left in the ``indexes`` folder.

        Only files of the save's own naming pattern whose writing process is gone are removed (see
        :func:`vireid.index._atomic.remove_stale_temp_files`); a save running in another live process
        is not disturbed. Call at startup.

        Returns:
            The removed files (each also logged).
        """
        return remove_stale_temp_files(self._root)

    @property
    def factory(self) -> str:
        """Factory string of new indexes."""
        return self._factory

    def paths(self, model_version: str, modality: str) -> tuple[Path, Path]:
        """``(index file, manifest file)`` of one index.

        Raises:
            ValueError: on a model version that is not a safe path component or a bad modality.
        """
        folder = self._root / check_model_version(model_version)
        name = check_modality(modality)
        return folder / f"{name}.faiss", folder / f"{name}.json"

    def loaded(self) -> list[IndexKey]:
        """Keys of the indexes held in memory."""
        with self._lock:
            return sorted(self._indexes)

    def loaded_index(self, model_version: str, modality: str) -> SharedIndex | None:
        """The in-memory index of ``(model_version, modality)`` when loaded, else None (nothing is read)."""
        with self._lock:
            return self._indexes.get((model_version, modality))

    def forget(self, model_version: str) -> None:
        """Drop a version's indexes from memory (its files stay; see :meth:`remove_files`)."""
        with self._lock:
            for key in [k for k in self._indexes if k[0] == model_version]:
                del self._indexes[key]
                self._disk.pop(key, None)
                self._save_locks.pop(key, None)

    def remove_files(self, model_version: str) -> None:
        """Delete a version's index folder (``indexes/<version>``) and forget its indexes."""
        import shutil

        self.forget(model_version)
        shutil.rmtree(self._root / check_model_version(model_version), ignore_errors=True)

    def get(self, model_version: str, modality: str, *, dim: int) -> SharedIndex:
        """The in-memory index, loading it from disk (checked against its manifest) or creating it.

        No SQL check happens here; use :meth:`load_or_rebuild` at start-up.

        Raises:
            ValueError: if the index exists with another ``dim``.
            FileNotFoundError: if only one of the index file and its manifest exists.
            CorruptIndexError: if files exist but are unreadable or disagree with their manifest.
        """
        key = (model_version, modality)
        index_path, manifest_path = self.paths(model_version, modality)
        with self._lock:
            shared = self._indexes.get(key)
            if shared is None:
                if index_path.exists() or manifest_path.exists():
                    index, state = self._read_checked(model_version, modality, dim=dim)
                else:
                    index, state = self._new_index(dim), None
                shared = self._install(key, index, state=state, dirty=False)
        if shared.dim != dim:
            raise ValueError(f"index {model_version}/{modality} has dim {shared.dim}, asked for {dim}")
        return shared

    def load_or_rebuild(
        self,
        model_version: str,
        modality: str,
        *,
        dim: int,
        session: Session,
        repository: GalleryRepository,
    ) -> SharedIndex:
        """Load an index if its files match their manifest, ``dim``, the factory and SQL; else rebuild.

        The SQL check compares the count and :func:`ids_digest` of the stored ids of ``(model_version,
        modality)`` with the manifest. A rebuild reads the stored embeddings and saves the new index;
        the reason is logged.

        Raises:
            ValueError: if stored embeddings do not have width ``dim``.
        """
        key = (model_version, modality)
        self.paths(model_version, modality)
        try:
            index, state = self._read_checked(model_version, modality, dim=dim)
            sql_ids = repository.list_ids(session=session, model_version=model_version, modality=modality)
            if not np.array_equal(sql_ids, index.ids()):
                raise CorruptIndexError(
                    f"index holds {len(index)} ids, SQL has {sql_ids.size} (ids digest differs)"
                )
        except FileNotFoundError as exc:
            logger.info("no saved index for %s/%s yet (%s); building it from SQL", *key, exc.filename or exc)
        except CorruptIndexError as exc:
            logger.warning("rebuilding index %s/%s from SQL: %s", *key, exc)
        else:
            with self._lock:
                shared = self._install(key, index, state=state, dirty=False)
            self.build_if_needed(model_version, modality)
            return shared
        return self.rebuild(model_version, modality, dim=dim, session=session, repository=repository)

    def rebuild(
        self,
        model_version: str,
        modality: str,
        *,
        dim: int,
        session: Session,
        repository: GalleryRepository,
    ) -> SharedIndex:
        """Build the index from the embeddings stored in SQL, install it and save it.

        Writers of this index should pause meanwhile: rows committed during the rebuild may be missed
        until the next :meth:`load_or_rebuild`.

        Raises:
            ValueError: if stored embeddings do not have width ``dim``.
        """
        key = (model_version, modality)
        self.paths(model_version, modality)
        index = FaissGalleryIndex.build(
            dim,
            lambda: _checked_dim(
                repository.iter_embeddings(session=session, model_version=model_version, modality=modality),
                key=key,
                dim=dim,
            ),
            **self._options,
        )
        logger.info("rebuilt index %s/%s from SQL: %d vectors", *key, len(index))
        with self._lock:
            shared = self._install(key, index, state=None, dirty=True)
        self.save(model_version, modality)
        return shared

    def save(self, model_version: str, modality: str) -> Path:
        """Write one loaded index and then its manifest, each atomically. Returns the index path.

        Raises:
            KeyError: if the index is not loaded.
        """
        key = (model_version, modality)
        index_path, manifest_path = self.paths(model_version, modality)
        with self._lock:
            shared = self._indexes[key]
            save_lock = self._save_locks.setdefault(key, threading.Lock())
        with save_lock:
            data, ids, generation, index = shared._snapshot()
            manifest = self._manifest_for(shared, index, data=data, ids=ids)
            atomic_write_bytes(index_path, data)
            atomic_write_bytes(manifest_path, manifest.to_json().encode())
            shared._mark_saved(generation)
            stat = manifest_path.stat()
            with self._lock:
                self._disk[key] = _DiskState(stat.st_mtime_ns, stat.st_size, manifest.index_sha256)
        # DEBUG: ingest saves after every committed batch, which would break up its progress bar
        logger.debug("saved index %s/%s: %d vectors to %s", *key, manifest.count, index_path)
        self.build_if_needed(*key)
        return index_path

    def save_all(self, *, only_dirty: bool = True) -> list[Path]:
        """Save every loaded index (by default only those changed since load or save)."""
        with self._lock:
            items = list(self._indexes.items())
        return [self.save(*key) for key, shared in items if shared.dirty or not only_dirty]

    def reload_if_changed(
        self, *, session: Session | None = None, repository: GalleryRepository | None = None
    ) -> list[IndexKey]:
        """Pick up indexes that another process (e.g. ``vireid ingest``) saved since we loaded them.

        A changed manifest (mtime or size, then index digest) triggers a reload. With ``session`` and
        ``repository`` the reload goes through :meth:`load_or_rebuild`, so the result matches SQL even
        when this process holds unsaved changes. Without them the file is loaded as is, unless this
        process holds unsaved changes, which are kept (a warning is logged).

        Returns:
            Keys of the indexes that were replaced.
        """
        reloaded: list[IndexKey] = []
        with self._lock:
            items = list(self._indexes.items())
        for key, shared in items:
            if not self._changed_on_disk(key):
                continue
            if session is not None and repository is not None:
                self.load_or_rebuild(*key, dim=shared.dim, session=session, repository=repository)
            elif shared.dirty:
                logger.warning("index %s/%s changed on disk but has unsaved changes here; kept", *key)
                continue
            else:
                try:
                    index, state = self._read_checked(*key, dim=shared.dim)
                except (FileNotFoundError, CorruptIndexError) as exc:
                    logger.warning("index %s/%s changed on disk but cannot be read: %s", *key, exc)
                    continue
                with self._lock:
                    self._install(key, index, state=state, dirty=False)
            logger.info("reloaded index %s/%s changed by another process", *key)
            reloaded.append(key)
        return reloaded

    def _changed_on_disk(self, key: IndexKey) -> bool:
        _, manifest_path = self.paths(*key)
        try:
            stat = manifest_path.stat()
            known = self._disk.get(key)
            if known is not None and (stat.st_mtime_ns, stat.st_size) == known[:2]:
                return False
            manifest = IndexManifest.read(manifest_path)
        except (FileNotFoundError, CorruptIndexError):
            return False
        if known is not None and manifest.index_sha256 == known.index_sha256:
            with self._lock:
                self._disk[key] = _DiskState(stat.st_mtime_ns, stat.st_size, known.index_sha256)
            return False
        return True

    def _new_index(self, dim: int) -> FaissGalleryIndex:
        return FaissGalleryIndex(dim, **self._options)

    def _install(
        self, key: IndexKey, index: FaissGalleryIndex, *, state: _DiskState | None, dirty: bool
    ) -> SharedIndex:
        """Put ``index`` in memory under ``key`` (swapping it into an existing handle). Hold ``_lock``."""
        index.use_gpu(self._gpu_device)
        shared = self._indexes.get(key)
        if shared is None:
            shared = SharedIndex(index, model_version=key[0], modality=key[1])
            if dirty:
                shared._replace(index, dirty=True)
            self._indexes[key] = shared
        else:
            shared._replace(index, dirty=dirty)
        if state is not None:
            self._disk[key] = state
        return shared

    def _manifest_for(
        self, shared: SharedIndex, index: FaissGalleryIndex, *, data: bytes, ids: npt.NDArray[np.int64]
    ) -> IndexManifest:
        return IndexManifest(
            format_version=MANIFEST_FORMAT_VERSION,
            dim=shared.dim,
            factory=self._factory,
            built_factory=index.built_factory if index.built_factory != self._factory else None,
            trained_count=index.trained_count,
            metric=shared.metric,
            model_version=shared.model_version,
            modality=shared.modality,
            count=int(ids.size),
            ids_sha256=ids_digest(ids),
            index_sha256=hashlib.sha256(data).hexdigest(),
            index_bytes=len(data),
            saved_at=datetime.now(timezone.utc).isoformat(),
        )

    def _read_checked(
        self, model_version: str, modality: str, *, dim: int
    ) -> tuple[FaissGalleryIndex, _DiskState]:
        """Read an index and its manifest and check them against each other and this store.

        Raises:
            FileNotFoundError: if either file is missing.
            CorruptIndexError: if they disagree (after :data:`_READ_ATTEMPTS` tries, in case a writer
                was replacing them) or do not match ``dim``, the factory or the metric.
        """
        index_path, manifest_path = self.paths(model_version, modality)
        error: CorruptIndexError | None = None
        for attempt in range(_READ_ATTEMPTS):
            if attempt:
                time.sleep(_READ_RETRY_DELAY_S)
            stat = manifest_path.stat()
            manifest = IndexManifest.read(manifest_path)
            data = index_path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest != manifest.index_sha256 or len(data) != manifest.index_bytes:
                error = CorruptIndexError(
                    f"{index_path}: {len(data)} bytes with digest {digest[:12]}, manifest says "
                    f"{manifest.index_bytes} bytes with digest {manifest.index_sha256[:12]}"
                )
                continue
            _check_manifest(
                manifest,
                model_version=model_version,
                modality=modality,
                dim=dim,
                factory=self._factory,
                metric=self._metric,
            )
            index = FaissGalleryIndex.deserialize(
                data,
                factory=manifest.factory,
                built_factory=manifest.built_factory,
                trained_count=manifest.trained_count,
            )
            index.set_search_defaults(
                nprobe=self._options["nprobe"],
                ef_search=self._options["ef_search"],
                k_factor=self._options["k_factor"],
            )
            _check_contents(index, manifest, dim=dim, source=index_path)
            return index, _DiskState(stat.st_mtime_ns, stat.st_size, digest)
        assert error is not None
        raise error


def _check_manifest(
    manifest: IndexManifest, *, model_version: str, modality: str, dim: int, factory: str, metric: str
) -> None:
    """Raise :class:`CorruptIndexError` if a manifest is not the one expected."""
    expected = {
        "model_version": model_version,
        "modality": modality,
        "dim": dim,
        "factory": factory,
        "metric": metric,
    }
    wrong = {
        name: (getattr(manifest, name), want)
        for name, want in expected.items()
        if getattr(manifest, name) != want
    }
    if wrong:
        detail = ", ".join(f"{name} is {got!r}, expected {want!r}" for name, (got, want) in wrong.items())
        raise CorruptIndexError(f"index manifest of {model_version}/{modality} does not match: {detail}")


def _check_contents(index: FaissGalleryIndex, manifest: IndexManifest, *, dim: int, source: Path) -> None:
    """Raise :class:`CorruptIndexError` if a loaded index disagrees with its manifest."""
    ids = index.ids()
    if index.dim != dim or len(index) != manifest.count or ids_digest(ids) != manifest.ids_sha256:
        raise CorruptIndexError(
            f"{source}: holds {len(index)} vectors of dim {index.dim}, manifest says {manifest.count} "
            f"of dim {manifest.dim} (or the ids differ)"
        )


def _checked_dim(
    batches: Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]], *, key: IndexKey, dim: int
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """Pass stored embedding batches through, refusing those of another width than ``dim``."""
    for ids, vectors in batches:
        if vectors.shape[1] != dim:
            raise ValueError(
                f"stored embeddings of {key[0]}/{key[1]} have dim {vectors.shape[1]}, expected {dim}"
            )
        yield ids, vectors


class _Builder(NamedTuple):
    """What a background build needs from the service: SQL sessions, the repository, the write lock."""

    sessions: Callable[[], Session]
    repository: GalleryRepository
    write_lock: AbstractContextManager[Any] | None
