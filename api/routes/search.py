"""``POST /search``: find gallery crops of the other modality that match a query crop or tracklet."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile

from vireid.api._bounds import MAX_FILTER_CAMERAS, MAX_K, MAX_TUNING
from vireid.api._uploads import parse_csv_list, read_upload
from vireid.api.deps import SearchServiceDep, SettingsDep
from vireid.api.errors import InvalidInputError
from vireid.api.routes._responses import error_responses, hide_source
from vireid.api.schemas import Match, ModelInfo, SearchResponse
from vireid.api.services import check_request_pixels
from vireid.api.settings import Modality

__all__ = ["router"]

router = APIRouter(prefix="/search", tags=["search"])


_DESCRIPTION = """Search the gallery with one crop, or with several crops of one person (a tracklet).

Several `image` parts are one tracklet: they are embedded together and fused into one query vector,
the mean of their L2-normalised embeddings, L2-normalised again (temporal mean pooling, the standard
video re-ID baseline); `query_images` says how many were fused. At most `VIREID_MAX_QUERY_IMAGES`
images (422 beyond); their pixels count together against `VIREID_MAX_REQUEST_PIXELS` (413).

Matches come in descending cosine score (ties: ascending id). Filters are applied inside the index
search, so `k` matches come back whenever `k` gallery items pass them. Naive timestamps are UTC.

`group_by=track` returns the best match per gallery `track_id` (an item without one is its own
group); `k` then counts groups, and candidates are fetched until `k` groups are found or the
gallery is used up. Each match's `track_matches` says how many of the examined candidates
(`candidates`) belong to its group.

`rerank=cmfp` re-scores the top `max(VIREID_RERANK_CANDIDATES, k)` candidates (grouped: all fetched
candidates, at most `VIREID_RERANK_MAX_CANDIDATES`) by SALCR's test-time cross-modality feature
propagation (`VIREID_RERANK_K` neighbours); the scores returned are the re-ranked ones.
"""


@router.post(
    "",
    response_model=SearchResponse,
    responses=error_responses(400, 403, 408, 413, 415, 422, 503),
    description=_DESCRIPTION,
)
def search(
    service: SearchServiceDep,
    settings: SettingsDep,
    image: Annotated[
        list[UploadFile],
        File(
            description="Query crop (JPEG, PNG or BMP); repeat the field for the crops of one tracklet "
            "(at most VIREID_MAX_QUERY_IMAGES)."
        ),
    ],
    modality: Annotated[Modality, Form(description="Modality of the query crop.")] = "infrared",
    k: Annotated[
        int, Form(ge=1, le=MAX_K, description="Number of matches (of tracks with group_by=track).")
    ] = 10,
    target_modality: Annotated[
        Modality | None, Form(description="Gallery modality to search; default the other one.")
    ] = None,
    cameras: Annotated[
        str | None,
        Form(description=f"Comma-separated cameras to keep (at most {MAX_FILTER_CAMERAS} names)."),
    ] = None,
    since: Annotated[
        datetime | None, Form(description="ISO 8601; keep items captured at/after (see docs for range).")
    ] = None,
    until: Annotated[
        datetime | None, Form(description="ISO 8601; keep items captured before (see docs for range).")
    ] = None,
    group_by: Annotated[
        Literal["none", "track"], Form(description="track: best match per gallery track_id; k counts tracks.")
    ] = "none",
    rerank: Annotated[
        Literal["none", "cmfp"], Form(description="cmfp: re-rank the top candidates by test-time CMFP.")
    ] = "none",
    nprobe: Annotated[
        int | None,
        Form(
            ge=1, le=MAX_TUNING, description="IVF lists probed by this search; default VIREID_INDEX_NPROBE."
        ),
    ] = None,
    ef_search: Annotated[
        int | None,
        Form(ge=1, le=MAX_TUNING, description="HNSW beam of this search; default VIREID_INDEX_EF_SEARCH."),
    ] = None,
) -> SearchResponse:
    """Search the gallery with a crop or a tracklet of crops (see the route description)."""
    if len(image) > settings.max_query_images:
        raise InvalidInputError(
            f"at most {settings.max_query_images} query images per search, got {len(image)}"
        )
    named = [
        (upload.filename or f"image-{n}", read_upload(upload, max_bytes=settings.max_upload_bytes))
        for n, upload in enumerate(image)
    ]
    check_request_pixels(
        named,
        max_image_pixels=settings.max_image_pixels,
        max_request_pixels=settings.max_request_pixels,
    )
    result = service.search_tracklet(
        named,
        modality=modality,
        k=k,
        target_modality=target_modality,
        cameras=parse_csv_list(cameras),
        since=since,
        until=until,
        group_by=group_by,
        rerank=rerank,
        nprobe=nprobe,
        ef_search=ef_search,
    )
    return SearchResponse(
        model=ModelInfo(method=result.method, version=result.model_version),
        query_modality=result.query_modality,
        target_modality=result.target_modality,
        matches=[hide_source(Match.model_validate(m), settings) for m in result.matches],
        took_ms=result.took_ms,
        query_images=result.query_images,
        group_by=result.group_by,
        rerank=result.rerank,
        candidates=result.candidates,
    )
