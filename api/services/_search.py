"""Search: embed a query crop (or a tracklet of crops) and find the closest gallery items of the other
modality, optionally grouped per gallery track and re-ranked by test-time CMFP."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from vireid.api._bounds import MAX_K, MAX_TUNING, check_camera_filter, check_datetime
from vireid.api.errors import InvalidInputError
from vireid.api.services._budget import plan_chunks
from vireid.api.services._context import ServiceContext, model_version_of
from vireid.api.services._images import decode, image_pixels
from vireid.api.services._records import parse_modality
from vireid.api.services._rerank import cmfp_rerank
from vireid.api.settings import Modality

if TYPE_CHECKING:
    from PIL import Image

    from vireid.index import StoreIndex
    from vireid.serving.runtime import Embedder

__all__ = [
    "MAX_K",
    "GroupBy",
    "Rerank",
    "SearchMatch",
    "SearchResult",
    "SearchService",
    "fuse_tracklet",
    "other_modality",
]

#: ``group_by`` of a search: ``none`` (one match per gallery item) or ``track`` (best item per track_id).
GroupBy = Literal["none", "track"]
#: ``rerank`` of a search: ``none`` or ``cmfp`` (test-time cross-modality feature propagation).
Rerank = Literal["none", "cmfp"]

logger = logging.getLogger(__name__)


def other_modality(modality: Modality) -> Modality:
    """The modality searched by default: infrared queries search visible crops and vice versa."""
    return "visible" if modality == "infrared" else "infrared"


@dataclass(frozen=True)
class SearchMatch:
    """One result: gallery metadata plus cosine ``score`` (higher is closer).

    ``track_matches`` is set by ``group_by="track"`` only: how many of the candidates examined belong
    to this match's group (its ``track_id``; 1 for an item without one, which is a group of its own).
    """

    id: int
    score: float
    camera: str
    modality: Modality
    captured_at: datetime | None
    track_id: str | None
    source: str | None
    track_matches: int | None = None


@dataclass(frozen=True)
class SearchResult:
    """Matches in descending score (ties by ascending id) and the model that produced them."""

    method: str
    model_version: str
    query_modality: Modality
    target_modality: Modality
    matches: list[SearchMatch]
    took_ms: float
    query_images: int = 1
    group_by: GroupBy = "none"
    rerank: Rerank = "none"
    candidates: int = 0


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
        group_by: str = "none",
        rerank: str = "none",
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> SearchResult:
        """Search with one encoded query image (a tracklet of one crop; see :meth:`search_tracklet`).

        Args:
            data: encoded query image (JPEG, PNG or BMP).
            source: name of the query in error messages.
            modality, k, target_modality, cameras, since, until, group_by, rerank, nprobe, ef_search: as
                :meth:`search_tracklet`.

        Raises:
            InvalidInputError: bad parameters, or an image that cannot be decoded.
            UnsupportedMediaTypeError: an image format the runtime does not accept.
        """
        return self.search_tracklet(
            [(source, data)],
            modality=modality,
            k=k,
            target_modality=target_modality,
            cameras=cameras,
            since=since,
            until=until,
            group_by=group_by,
            rerank=rerank,
            nprobe=nprobe,
            ef_search=ef_search,
        )

    def search_tracklet(
        self,
        images: Sequence[tuple[str, bytes]],
        *,
        modality: str = "infrared",
        k: int = 10,
        target_modality: str | None = None,
        cameras: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str = "none",
        rerank: str = "none",
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> SearchResult:
        """Search with the crops of one person's tracklet, fused into one query vector.

        The crops are decoded and embedded together (in chunks when their pixels exceed
        ``settings.max_decode_pixels``, each chunk holding its pixels of the decode budget) and fused by
        :func:`fuse_tracklet`: the mean of the L2-normalised embeddings, L2-normalised again (mean
        pooling of frame features, the standard video re-ID baseline). One crop is its own embedding.

        With ``group_by="track"`` the result holds the best match per gallery ``track_id`` (an item
        without one is a group of its own) and ``k`` counts groups: candidates are fetched from the
        index, doubling their number, until ``k`` groups are found or the (filtered) gallery is used up.
        With ``rerank="cmfp"`` the top ``max(settings.rerank_candidates, k)`` candidates (or, grouped,
        all candidates fetched) are re-scored by test-time CMFP (:func:`~vireid.api.services._rerank.
        cmfp_rerank`, methods.md §A.6) with ``settings.rerank_k`` neighbours; the scores returned are
        the re-ranked ones.

        Args:
            images: ``(name, encoded bytes)`` of each crop (JPEG, PNG or BMP), 1 to
                ``settings.max_query_images``; the name is used in error messages.
            modality: modality of the query (selects the embedding graph).
            k: number of results (groups with ``group_by="track"``), 1..:data:`MAX_K`.
            target_modality: gallery modality to search; default the other modality.
            cameras: keep only these gallery cameras (at most ``MAX_FILTER_CAMERAS`` names).
            since: keep only items captured at or after this time (naive = UTC).
            until: keep only items captured before this time (exclusive; naive = UTC). Items without a
                capture time are dropped by either time filter. Both must lie in the range of
                :func:`vireid.api._bounds.check_datetime`.
            group_by: ``"none"`` or ``"track"``.
            rerank: ``"none"`` or ``"cmfp"``.
            nprobe: IVF lists probed by this search (default ``settings.index_nprobe``; no effect on
                exact or HNSW indexes), 1..:data:`MAX_TUNING`.
            ef_search: HNSW beam of this search (default ``settings.index_ef_search``), 1..:data:`MAX_TUNING`.

        Raises:
            InvalidInputError: bad parameters, no image or more than ``settings.max_query_images``, an
                image that cannot be decoded (named in the message), or a grouped re-ranked search that
                would need more than ``settings.rerank_max_candidates`` candidates.
            UnsupportedMediaTypeError: an image format the runtime does not accept.
        """
        start = time.perf_counter()
        settings = self._ctx.settings
        query_modality = parse_modality(modality)
        if not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}")
        grouping = _parse_choice(group_by, GroupBy, name="group_by")
        reranking = _parse_choice(rerank, Rerank, name="rerank")
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and not 1 <= value <= MAX_TUNING:
                raise InvalidInputError(f"{name} must be between 1 and {MAX_TUNING}, got {value}")
        if not images:
            raise InvalidInputError("at least one query image is needed")
        if len(images) > settings.max_query_images:
            raise InvalidInputError(
                f"at most {settings.max_query_images} query images per search, got {len(images)}"
            )
        target = parse_modality(target_modality) if target_modality else other_modality(query_modality)
        checked = _check_filters(cameras=cameras, since=since, until=until)
        embedder = self._ctx.embedder  # one model for the whole request, even across a switch
        version = model_version_of(embedder)
        vector = self._embed_tracklet(images, embedder=embedder, modality=query_modality)
        self._ctx.refresh(wait=False)
        matches, examined = self._query(
            vector,
            index=self._ctx.index_of(embedder, target),
            version=version,
            k=k,
            target=target,
            cameras=checked[0],
            since=checked[1],
            until=checked[2],
            group_by=grouping,
            rerank=reranking,
            nprobe=nprobe,
            ef_search=ef_search,
        )
        took_ms = (time.perf_counter() - start) * 1000.0
        logger.debug(
            "search %s->%s k=%d images=%d group_by=%s rerank=%s: %d matches of %d candidates in %.1f ms",
            query_modality,
            target,
            k,
            len(images),
            grouping,
            reranking,
            len(matches),
            examined,
            took_ms,
        )
        return SearchResult(
            method=str(embedder.manifest.method),
            model_version=version,
            query_modality=query_modality,
            target_modality=target,
            matches=matches,
            took_ms=took_ms,
            query_images=len(images),
            group_by=grouping,
            rerank=reranking,
            candidates=examined,
        )

    def _embed_tracklet(
        self, images: Sequence[tuple[str, bytes]], *, embedder: Embedder, modality: Modality
    ) -> npt.NDArray[np.float32]:
        """Decode and embed the crops under the decode budget; ``(1, D)`` float32 fused query."""
        settings = self._ctx.settings
        max_pixels = settings.max_image_pixels
        sized = [
            (name, data, image_pixels(data, max_pixels=max_pixels, source=name)) for name, data in images
        ]
        rows: list[npt.NDArray[np.float32]] = []
        for chunk in plan_chunks(
            sized, lambda item: item[2], max_pixels=settings.max_decode_pixels, max_items=len(sized)
        ):
            with self._ctx.decode_budget.reserve(sum(item[2] for item in chunk)):
                decoded: list[Image.Image] = [
                    decode(data, max_pixels=max_pixels, source=name) for name, data, _ in chunk
                ]
                rows.append(np.asarray(embedder.embed(decoded, modality), dtype=np.float32))
                del decoded
        vectors = np.concatenate(rows)
        fused = vectors if vectors.shape[0] == 1 else fuse_tracklet(vectors)[None, :]
        return np.ascontiguousarray(fused, dtype=np.float32)

    def _query(
        self,
        vector: npt.NDArray[np.float32],
        *,
        index: StoreIndex,
        version: str,
        k: int,
        target: Modality,
        cameras: list[str] | None,
        since: datetime | None,
        until: datetime | None,
        group_by: GroupBy,
        rerank: Rerank,
        nprobe: int | None,
        ef_search: int | None,
    ) -> tuple[list[SearchMatch], int]:
        """The matches and the number of candidates examined."""
        repo = self._ctx.repository
        settings = self._ctx.settings
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
                    return [], 0
            available = len(index) if allowed is None else int(allowed.size)
            wanted = max(k, settings.rerank_candidates) if rerank == "cmfp" else k

            def search(n: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
                if filter_inside is not None:
                    return filter_inside(  # type: ignore[no-any-return]
                        vector,
                        n,
                        cameras=cameras,
                        since=since,
                        until=until,
                        nprobe=nprobe,
                        ef_search=ef_search,
                    )
                return index.search(vector, n, allowed_ids=allowed, nprobe=nprobe, ef_search=ef_search)

            pool = self._fetch(search, session=session, n=max(wanted, 1))
            while group_by == "track" and _group_count(pool.rows) < k and pool.asked < available:
                if not pool.complete:
                    break
                if rerank == "cmfp" and pool.asked >= settings.rerank_max_candidates:
                    raise InvalidInputError(
                        f"group_by=track with rerank=cmfp: {pool.asked} candidates hold fewer than {k} "
                        f"tracks, and at most {settings.rerank_max_candidates} candidates are re-ranked "
                        "(VIREID_RERANK_MAX_CANDIDATES); lower k or search without rerank"
                    )
                n = min(pool.asked * 2, available)
                if rerank == "cmfp":
                    n = min(n, settings.rerank_max_candidates)
                pool = self._fetch(search, session=session, n=n)
            scored = pool.rows
            if rerank == "cmfp" and scored:
                scored = _rerank(vector, scored, session=session, repo=repo, k=settings.rerank_k)
        examined = len(scored)
        if group_by == "track":
            return _best_per_track(scored, k), examined
        return [_match(row, score) for row, score in scored[:k]], examined

    def _fetch(
        self,
        search: Callable[[int], tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
        *,
        session: Any,
        n: int,
    ) -> _Pool:
        """The top ``n`` candidates (``search(n)``: the index search with the filters) with their SQL
        rows, in index order."""
        scores, ids = search(n)
        hits = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        rows = self._ctx.repository.filter_ids(
            session=session, ids=np.asarray([i for i, _ in hits], dtype=np.int64)
        )
        by_id = {int(row.id): row for row in rows}
        # An id missing from SQL was deleted by another process after the index was loaded: skip it.
        return _Pool(
            rows=[(by_id[i], score) for i, score in hits if i in by_id], asked=n, complete=len(hits) >= n
        )


@dataclass(frozen=True)
class _Pool:
    """Candidates of one index search: ``(row, score)`` best first; ``complete``: ``asked`` came back."""

    rows: list[tuple[Any, float]]
    asked: int
    complete: bool


def fuse_tracklet(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """One query vector for the crops of a tracklet: ``norm(mean_i norm(v_i))``.

    Temporal mean pooling of per-frame features, the standard baseline of video re-identification
    (e.g. Zheng et al., MARS, ECCV 2016; Gao & Nevatia, "Revisiting Temporal Modeling for Video-based
    Person ReID", 2018). Each embedding is L2-normalised first, so every crop weighs the same.

    Args:
        vectors: (N, D) float32 embeddings of the crops, N >= 1.

    Returns:
        (D,) float32 unit vector.

    Raises:
        InvalidInputError: the normalised embeddings sum to (almost) zero, so no direction is left.
        ValueError: ``vectors`` is not a non-empty 2-D array.
    """
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"need (N, D) embeddings with N >= 1, got shape {arr.shape}")
    units = arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
    mean = units.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-6:
        raise InvalidInputError("the tracklet's crops have opposite embeddings: their mean is zero")
    fused: npt.NDArray[np.float32] = (mean / norm).astype(np.float32)
    return fused


def _parse_choice(value: str, choices: Any, *, name: str) -> Any:
    allowed = get_args(choices)
    if value not in allowed:
        raise InvalidInputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _group_key(row: Any) -> tuple[str, str | int]:
    """A track's items share a key; an item without a track_id is a group of its own."""
    return ("track", row.track_id) if row.track_id is not None else ("item", int(row.id))


def _group_count(scored: Sequence[tuple[Any, float]]) -> int:
    return len({_group_key(row) for row, _ in scored})


def _best_per_track(scored: Sequence[tuple[Any, float]], k: int) -> list[SearchMatch]:
    """The first (best) candidate of each group, for the first ``k`` groups, with the group sizes."""
    counts: dict[tuple[str, str | int], int] = {}
    best: dict[tuple[str, str | int], tuple[Any, float]] = {}
    for row, score in scored:
        key = _group_key(row)
        counts[key] = counts.get(key, 0) + 1
        best.setdefault(key, (row, score))
    firsts = list(best.items())[:k]  # dicts keep insertion order: best group first
    return [
        dataclasses.replace(_match(row, score), track_matches=counts[key]) for key, (row, score) in firsts
    ]


def _rerank(
    vector: npt.NDArray[np.float32],
    scored: Sequence[tuple[Any, float]],
    *,
    session: Any,
    repo: Any,
    k: int,
) -> list[tuple[Any, float]]:
    """The candidates re-scored by test-time CMFP with their stored (SQL) embeddings, best first."""
    ids, vectors = repo.embeddings_of(session=session, ids=[int(row.id) for row, _ in scored])
    rows = {int(row.id): row for row, _ in scored}
    scores = cmfp_rerank(vector[0], vectors, k=k)
    ranked = sorted(zip(ids.tolist(), scores.tolist(), strict=True), key=lambda pair: (-pair[1], pair[0]))
    return [(rows[i], float(score)) for i, score in ranked]


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
