"""``POST /search``: find gallery crops of the other modality that match a query crop."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from vireid.api._bounds import MAX_FILTER_CAMERAS, MAX_K
from vireid.api._uploads import parse_csv_list, read_upload
from vireid.api.deps import SearchServiceDep, SettingsDep
from vireid.api.routes._responses import error_responses, hide_source
from vireid.api.schemas import Match, ModelInfo, SearchResponse
from vireid.api.services import check_request_pixels
from vireid.api.settings import Modality

__all__ = ["router"]

router = APIRouter(prefix="/search", tags=["search"])


@router.post("", response_model=SearchResponse, responses=error_responses(400, 403, 408, 413, 415, 422, 503))
def search(
    service: SearchServiceDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="Query crop (JPEG, PNG or BMP).")],
    modality: Annotated[Modality, Form(description="Modality of the query crop.")] = "infrared",
    k: Annotated[int, Form(ge=1, le=MAX_K, description="Number of matches.")] = 10,
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
) -> SearchResponse:
    """Search the gallery with one crop; matches come in descending cosine score.

    Filters are applied inside the index search, so ``k`` matches come back whenever ``k`` gallery
    items pass them. Naive timestamps are taken as UTC.
    """
    data = read_upload(image, max_bytes=settings.max_upload_bytes)
    name = image.filename or "image"
    check_request_pixels(
        [(name, data)],
        max_image_pixels=settings.max_image_pixels,
        max_request_pixels=settings.max_request_pixels,
    )
    result = service.search(
        data,
        modality=modality,
        k=k,
        target_modality=target_modality,
        cameras=parse_csv_list(cameras),
        since=since,
        until=until,
        source=name,
    )
    return SearchResponse(
        model=ModelInfo(method=result.method, version=result.model_version),
        query_modality=result.query_modality,
        target_modality=result.target_modality,
        matches=[hide_source(Match.model_validate(m), settings) for m in result.matches],
        took_ms=result.took_ms,
    )
