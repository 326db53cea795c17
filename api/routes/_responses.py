"""What the routes share: OpenAPI descriptions of the error responses, and the ``source`` policy."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from vireid.api.schemas import ErrorResponse
from vireid.api.settings import Settings

__all__ = ["error_responses", "hide_source"]

M = TypeVar("M", bound=BaseModel)

_DESCRIPTIONS = {
    400: "Malformed multipart body.",
    401: "Missing or wrong X-API-Key (only when VIREID_API_KEY is set).",
    403: "Write from a web page of another origin (Origin header) not listed in VIREID_CORS_ORIGINS.",
    404: "No gallery item (or model version) with this id.",
    409: "Model version not completely indexed (activate), or the active one (delete).",
    408: "Request body not received within VIREID_BODY_TIMEOUT_S (the connection is closed).",
    413: "Body or file larger than VIREID_MAX_UPLOAD_BYTES, or images of more pixels in all than "
    "VIREID_MAX_REQUEST_PIXELS (read from the image headers, before decoding).",
    415: "Image format other than JPEG, PNG or BMP.",
    422: "Bad parameter, or an empty, truncated, undecodable or oversized (pixel count) image.",
    503: "Model or gallery index not loaded.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given status codes, all with an :class:`ErrorResponse` body."""
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}


def hide_source(model: M, settings: Settings) -> M:
    """``model`` with ``source`` set to None unless ``settings.return_source`` (for ``vireid ingest``
    items it is a server-side file path, readable without an API key)."""
    return model if settings.return_source else model.model_copy(update={"source": None})
