"""The `GalleryIndex` protocol (house-style §24, architecture.md contract 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

_IndexT = TypeVar("_IndexT", bound="GalleryIndex")


@runtime_checkable
class GalleryIndex(Protocol):
    """A vector index over gallery embeddings whose ids are the SQL primary keys.

    Result order, shared by every implementation: descending score, then ascending id. Scores are
    inner products for ``metric="ip"`` (cosine similarity on L2-normalised embeddings) and negated
    squared Euclidean distances for ``metric="l2"``, so a larger score is always a better match.
    Empty result slots hold id ``-1`` and score ``-inf``.
    """

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        ...

    @property
    def metric(self) -> str:
        """``"ip"`` or ``"l2"``."""
        ...

    def __len__(self) -> int:
        """Number of vectors in the index."""
        ...

    def ids(self) -> npt.NDArray[np.int64]:
        """``(N,)`` int64 ids in the index, ascending."""
        ...

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        """Add ``(N,)`` non-negative int64 ids with their ``(N, D)`` float32 vectors.

        Raises:
            ValueError: on a bad shape, dtype, non-finite value, or an id that is repeated or already
                present; the index is left unchanged.
        """
        ...

    def search(
        self,
        vectors: npt.NDArray[np.float32],
        k: int,
        *,
        allowed_ids: npt.ArrayLike | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Return the ``k`` best ids for each of ``(Q, D)`` float32 queries.

        Args:
            vectors: ``(Q, D)`` float32 queries.
            k: results per query (>= 1).
            allowed_ids: optional ``(M,)`` ids; only these may be returned (camera or time filters).

        Returns:
            ``(scores (Q, k) float32, ids (Q, k) int64)``, ``-1`` padded.
        """
        ...

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``(M,)`` ids; unknown ids are ignored. Returns how many were removed."""
        ...

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (temp file in the same folder, then rename)."""
        ...

    @classmethod
    def load(cls: type[_IndexT], path: str | Path) -> _IndexT:
        """Read an index written by :meth:`save`.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            CorruptIndexError: if the file cannot be parsed.
        """
        ...


class CorruptIndexError(ValueError):
    """An index file or its manifest is unreadable or disagrees with what it should hold."""
