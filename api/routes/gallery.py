"""``/gallery``: add images, read, delete and count gallery items."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Response, UploadFile, status

from vireid.api._bounds import MAX_CAMERA_CHARS, MAX_SOURCE_CHARS, MAX_TRACK_ID_CHARS, ItemIdPath
from vireid.api._uploads import read_upload
from vireid.api.deps import ApiKeyDep, GalleryServiceDep, SettingsDep
from vireid.api.errors import InvalidInputError
from vireid.api.routes._responses import error_responses, hide_source
from vireid.api.schemas import (
    CameraModalityCount,
    GalleryCreateResponse,
    GalleryItemCreate,
    GalleryItemPublic,
    GalleryStats,
)
from vireid.api.services import IngestRecord, check_request_pixels
from vireid.api.settings import Modality

__all__ = ["router"]

router = APIRouter(prefix="/gallery", tags=["gallery"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=GalleryCreateResponse,
    dependencies=[ApiKeyDep],
    responses=error_responses(400, 401, 403, 408, 413, 415, 422, 503),
)
def add_images(
    service: GalleryServiceDep,
    settings: SettingsDep,
    images: Annotated[list[UploadFile], File(description="One or more crops (JPEG, PNG or BMP).")],
    camera: Annotated[
        str, Form(min_length=1, max_length=MAX_CAMERA_CHARS, description="No control characters.")
    ],
    modality: Annotated[Modality, Form()],
    captured_at: Annotated[
        datetime | None, Form(description="ISO 8601; naive = UTC; years 0001-01-02 to 9999-12-30 in UTC.")
    ] = None,
    track_id: Annotated[
        str | None, Form(max_length=MAX_TRACK_ID_CHARS, description="No control characters.")
    ] = None,
    source: Annotated[
        str | None,
        Form(max_length=MAX_SOURCE_CHARS, description="Default: upload file name. No control characters."),
    ] = None,
) -> GalleryCreateResponse:
    """Add crops of one camera. All or nothing: one bad image refuses the whole request.

    The images' pixel counts are read from their headers first; a request over
    ``VIREID_MAX_REQUEST_PIXELS`` in all is refused (413) before any image is decoded. The rest are
    decoded, embedded and released in chunks, so the request never holds all its decoded images.

    An image already stored (same SHA-256 of the bytes, same model and modality) is not added again;
    its existing id is returned and its metadata is left unchanged.
    """
    if len(images) > settings.max_files_per_request:
        raise InvalidInputError(
            f"at most {settings.max_files_per_request} images per request, got {len(images)}"
        )
    meta = GalleryItemCreate(
        camera=camera, modality=modality, captured_at=captured_at, track_id=track_id, source=source
    )
    records = [
        IngestRecord(
            source=meta.source or upload.filename or f"upload-{n}",
            camera=meta.camera,
            modality=meta.modality,
            captured_at=meta.captured_at,
            track_id=meta.track_id,
            data=read_upload(upload, max_bytes=settings.max_upload_bytes),
        )
        for n, upload in enumerate(images)
    ]
    check_request_pixels(
        [(r.source, r.data or b"") for r in records],
        max_image_pixels=settings.max_image_pixels,
        max_request_pixels=settings.max_request_pixels,
    )
    report = service.ingest(records, batch_size=len(records), strict=True)
    return GalleryCreateResponse(
        ids=[int(o.id) for o in report.outcomes if o.id is not None],
        added=report.added,
        duplicates=report.duplicates,
    )


@router.get("/stats", response_model=GalleryStats, responses=error_responses(503))
def stats(service: GalleryServiceDep) -> GalleryStats:
    """Item counts per camera and modality, for the loaded model."""
    result = service.stats()
    return GalleryStats(
        model_version=result.model_version,
        total=result.total,
        by_modality=result.by_modality(),
        by_camera=[
            CameraModalityCount.model_validate({"camera": c, "modality": m, "count": n})
            for c, m, n in result.by_camera
        ],
    )


@router.get("/{item_id}", response_model=GalleryItemPublic, responses=error_responses(404, 422, 503))
def get_item(service: GalleryServiceDep, settings: SettingsDep, item_id: ItemIdPath) -> GalleryItemPublic:
    """One gallery item's metadata (``source`` only when ``VIREID_RETURN_SOURCE`` is true)."""
    return hide_source(GalleryItemPublic.model_validate(service.get(item_id)), settings)


@router.get(
    "/{item_id}/image",
    response_class=Response,
    responses={
        200: {
            "content": {"image/jpeg": {}, "image/png": {}, "image/bmp": {}},
            "description": "The crop's bytes as uploaded.",
        },
        304: {"description": "Not modified (If-None-Match matched the ETag, the crop's SHA-256)."},
        **error_responses(404, 422, 503),
    },
)
def get_image(
    service: GalleryServiceDep,
    item_id: ItemIdPath,
    if_none_match: Annotated[str | None, Header(description="ETag of a cached copy.")] = None,
) -> Response:
    """The stored crop of an item, with its content type; crops never change, so they are cacheable.

    404 when the item is unknown or its crop is not stored (``VIREID_STORE_CROPS=false``, or an item
    stored before crops were kept: ingesting the same image again stores it).
    """
    data, media_type, sha256 = service.crop(item_id)
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if if_none_match is not None and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content=data, media_type=media_type, headers=headers)


@router.delete(
    "/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 403, 404, 422, 503),
)
def delete_item(service: GalleryServiceDep, item_id: ItemIdPath) -> Response:
    """Delete an item from the database and from its index (the index is saved)."""
    service.delete(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
