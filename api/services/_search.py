"""Search: embed a query crop and find the closest gallery items of the other modality."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from vireid.api._bounds import MAX_K, check_camera_filter, check_datetime
from vireid.api.errors import InvalidInputError
from vireid.api.services._context import ServiceContext, model_version_of
from vireid.api.services._images import decode, image_pixels
from vireid.api.services._records import parse_modality
from vireid.api.settings import Modality

if TYPE_CHECKING:
    from vireid.index import StoreIndex

__all__ = ["MAX_K", "SearchMatch", "SearchResult", "SearchService", "other_modality"]

logger = logging.getLogger(__name__)


def other_modality(modality: Modality) -> Modality:
    """The modality searched by default: infrared queries search visible crops and vice versa."""
    return "visible" if modality == "infrared" else "infrared"


@dataclass(frozen=True)
class SearchMatch:
    """One result: gallery metadata plus cosine ``score`` (higher is closer)."""

    id: int
    score: float
    camera: str
    modality: Modality
    captured_at: datetime | None
    track_id: str | None
    source: str | None


@dataclass(frozen=True)
class SearchResult:
    """Matches in descending score (ties by ascending id) and the model that produced them."""

    method: str
    model_version: str
    query_modality: Modality
    target_modality: Modality
    matches: list[SearchMatch]
    took_ms: float


class SearchService:
    """Embeds query images and searches the gallery index of the target modality.

    Args:
        context: loaded embedder, sessions, indexes.
    """

    def __init__(self, context: ServiceContext) -> None:
        self._ctx = context

    def search(
        self,
        data: bytes,
        *,
        modality: str = "infrared",
        k: int = 10,
        target_modality: str | None = None,
        cameras: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        source: str = "query",
    ) -> SearchResult:
        """Search with an encoded query image.

        Args:
            data: encoded query image (JPEG, PNG or BMP).
            modality: modality of the query (selects the embedding graph).
            k: number of results, 1..:data:`MAX_K`.
            target_modality: gallery modality to search; default the other modality.
            cameras: keep only these gallery cameras (at most ``MAX_FILTER_CAMERAS`` names).
            since: keep only items captured at or after this time (naive = UTC).
            until: keep only items captured before this time (exclusive; naive = UTC). Items without a
                capture time are dropped by either time filter. Both must lie in the range of
                :func:`vireid.api._bounds.check_datetime`.
            source: name of the query in error messages.

        Raises:
            InvalidInputError: bad parameters, or an image that cannot be decoded.
            UnsupportedMediaTypeError: an image format the runtime does not accept.
        """
        start = time.perf_counter()
        query_modality = parse_modality(modality)
        if not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}")
        target = parse_modality(target_modality) if target_modality else other_modality(query_modality)
        checked = _check_filters(cameras=cameras, since=since, until=until)
        max_pixels = self._ctx.settings.max_image_pixels
        pixels = image_pixels(data, max_pixels=max_pixels, source=source)
        embedder = self._ctx.embedder  # one model for the whole request, even across a switch
        version = model_version_of(embedder)
        with self._ctx.decode_budget.reserve(pixels):
            image = decode(data, max_pixels=max_pixels, source=source)
            vector = np.ascontiguousarray(embedder.embed([image], query_modality), dtype=np.float32)
            del image
        self._ctx.refresh(wait=False)
        matches = self._query(
            vector,
            index=self._ctx.index_of(embedder, target),
            version=version,
            k=k,
            target=target,
            cameras=checked[0],
            since=checked[1],
            until=checked[2],
        )
        took_ms = (time.perf_counter() - start) * 1000.0
        logger.debug(
            "search %s->%s k=%d: %d matches in %.1f ms", query_modality, target, k, len(matches), took_ms
        )
        return SearchResult(
            method=str(embedder.manifest.method),
            model_version=version,
            query_modality=query_modality,
            target_modality=target,
            matches=matches,
            took_ms=took_ms,
        )

    def _query(
        self,
        vector: np.ndarray,
        *,
        index: StoreIndex,
        version: str,
        k: int,
        target: Modality,
        cameras: list[str] | None,
        since: datetime | None,
        until: datetime | None,
    ) -> list[SearchMatch]:
        repo = self._ctx.repository
        allowed: np.ndarray | None = None
        with self._ctx.session() as session:
            filtered = cameras is not None or since is not None or until is not None
            # An index that runs the filters itself (Milvus, vireid.index.FilteringIndex) skips the SQL query.
            filter_inside = getattr(index, "search_filtered", None) if filtered else None
            if filtered and filter_inside is None:
                allowed = repo.matching_ids(
                    session=session,
                    model_version=version,
                    modality=target,
                    cameras=cameras,
                    since=since,
                    until=until,
                )
                if allowed.size == 0:
                    return []
            if filter_inside is not None:
                scores, ids = filter_inside(vector, k, cameras=cameras, since=since, until=until)
            else:
                scores, ids = index.search(vector, k, allowed_ids=allowed)
            hits = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
            rows = repo.filter_ids(session=session, ids=np.asarray([i for i, _ in hits], dtype=np.int64))
            by_id = {int(row.id): row for row in rows}
        # An id missing from SQL was deleted by another process after the index was loaded: skip it.
        return [_match(by_id[i], score) for i, score in hits if i in by_id]


def _match(row: Any, score: float) -> SearchMatch:
    return SearchMatch(
        id=int(row.id),
        score=score,
        camera=row.camera,
        modality=row.modality,
        captured_at=row.captured_at,  # UTCDateTime: timezone-aware UTC
        track_id=row.track_id,
        source=row.source,
    )


def _check_filters(
    *, cameras: Sequence[str] | None, since: datetime | None, until: datetime | None
) -> tuple[list[str] | None, datetime | None, datetime | None]:
    names = check_camera_filter(cameras)
    since, until = check_datetime(since, name="since"), check_datetime(until, name="until")
    if since is not None and until is not None and since >= until:
        raise InvalidInputError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    return names, since, until
