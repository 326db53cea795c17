"""What the service needs of an index store, whatever the backend: FAISS files (:class:`IndexStore`)
or Milvus collections (:class:`MilvusIndexStore`). Both follow these protocols structurally."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from vireid.index._repository import GalleryRepository


class StoreIndex(Protocol):
    """One ``(model_version, modality)`` index as a store hands it out (thread-safe).

    Ordering and padding follow :class:`~vireid.index.GalleryIndex`.
    """

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        ...

    @property
    def metric(self) -> str:
        """``"ip"`` or ``"l2"``."""
        ...

    @property
    def dirty(self) -> bool:
        """True when changes were made that :meth:`IndexBackend.save` has not written yet."""
        ...

    def __len__(self) -> int: ...

    def ids(self) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids, ascending."""
        ...

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        """Add ``(N,)`` ids (committed SQL rows, or rows of the open unit of work) with ``(N, D)``
        float32 vectors."""
        ...

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``(M,)`` ids; returns how many were removed."""
        ...

    def search(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        allowed_ids: npt.ArrayLike | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``(scores (Q, k) float32, ids (Q, k) int64)`` of ``(Q, D)`` float32 queries; ``nprobe`` /
        ``ef_search`` tune an approximate index for this search (ignored where they mean nothing)."""
        ...


class FilteringIndex(Protocol):
    """A :class:`StoreIndex` that runs camera and time filters itself (Milvus), so the service need
    not collect the allowed ids from SQL first."""

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
        """Like ``search``, keeping only items of ``cameras`` captured in ``[since, until)``; the same
        items as :meth:`GalleryRepository.matching_ids` selects."""
        ...


class IndexBackend(Protocol):
    """The index store of a service: one :class:`StoreIndex` per ``(model_version, modality)``, checked
    against SQL (the source of truth) by :meth:`load_or_rebuild`."""

    def get(self, model_version: str, modality: str, *, dim: int) -> StoreIndex:
        """The index, opened or created (no SQL check). Raises ValueError on another ``dim``."""
        ...

    def loaded_index(self, model_version: str, modality: str) -> StoreIndex | None:
        """The index when this store has it (or, for Milvus, when its collection exists), else None."""
        ...

    def load_or_rebuild(
        self,
        model_version: str,
        modality: str,
        *,
        dim: int,
        session: Session,
        repository: GalleryRepository,
    ) -> StoreIndex:
        """Open the index and make it hold exactly the SQL ids of ``(model_version, modality)``."""
        ...

    def save(self, model_version: str, modality: str) -> object:
        """Make the changes of one index durable (after the SQL commit)."""
        ...

    def save_all(self, *, only_dirty: bool = True) -> Sequence[object]:
        """:meth:`save` every index (by default only those with unsaved changes)."""
        ...

    def reload_if_changed(
        self, *, session: Session | None = None, repository: GalleryRepository | None = None
    ) -> list[tuple[str, str]]:
        """Pick up indexes another process changed; returns the keys replaced."""
        ...

    def enable_builds(
        self,
        *,
        sessions: Callable[[], Session],
        repository: GalleryRepository,
        write_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        """Let the store rebuild indexes in the background when they need it (FAISS: training)."""
        ...

    def stop_builds(self, *, finish: bool = False, timeout: float | None = None) -> None:
        """Stop (or, with ``finish``, wait for) the background builds."""
        ...

    def remove_files(self, model_version: str) -> None:
        """Delete every index of a model version."""
        ...

    def remove_stale_temp_files(self) -> Sequence[object]:
        """Clean up what a killed writer left; returns what was removed."""
        ...
