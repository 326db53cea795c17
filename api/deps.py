"""FastAPI dependencies as ``Annotated`` aliases (house-style §30)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from vireid.api.errors import NotReadyError, UnauthorizedError
from vireid.api.services import GalleryService, SearchService, ServiceContext
from vireid.api.settings import Settings, get_settings

__all__ = [
    "ApiKeyDep",
    "ContextDep",
    "GalleryServiceDep",
    "SearchServiceDep",
    "SettingsDep",
    "get_context",
    "get_gallery_service",
    "get_search_service",
    "require_api_key",
]

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_context(request: Request) -> ServiceContext:
    """The context loaded by the app's lifespan.

    Raises:
        NotReadyError: loading failed or has not finished (HTTP 503).
    """
    context: ServiceContext | None = getattr(request.app.state, "context", None)
    if context is None:
        reason = getattr(request.app.state, "load_error", None) or "still loading"
        raise NotReadyError(f"model and gallery index are not loaded: {reason}")
    return context


ContextDep = Annotated[ServiceContext, Depends(get_context)]


def get_search_service(context: ContextDep) -> SearchService:
    """The search service over the loaded context."""
    return SearchService(context)


def get_gallery_service(context: ContextDep) -> GalleryService:
    """The gallery (ingest, lookup, delete) service over the loaded context."""
    return GalleryService(context)


SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]
GalleryServiceDep = Annotated[GalleryService, Depends(get_gallery_service)]


def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="Required when VIREID_API_KEY is set.")] = None,
) -> None:
    """Check ``X-API-Key`` against ``settings.api_key`` (no check when no key is configured).

    Raises:
        UnauthorizedError: the header is missing or wrong (HTTP 401).
    """
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected):
        raise UnauthorizedError("missing or invalid X-API-Key header")


ApiKeyDep = Depends(require_api_key)
