"""FastAPI dependencies as ``Annotated`` aliases (house-style §30)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from vireid.api.errors import NotReadyError, UnauthorizedError
from vireid.api.services import GalleryService, SearchService, ServiceContext
from vireid.api.settings import Settings, get_settings

__all__ = [
    "API_KEY_REFUSED",
    "ApiKeyDep",
    "ContextDep",
    "GalleryServiceDep",
    "SearchServiceDep",
    "SettingsDep",
    "api_key_accepted",
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


#: The 401 message of a missing or wrong key.
API_KEY_REFUSED = "missing or invalid X-API-Key header"


def api_key_accepted(settings: Settings, x_api_key: str | None) -> bool:
    """True when no key is configured or ``x_api_key`` equals it (constant-time comparison)."""
    if settings.api_key is None:
        return True
    expected = settings.api_key.get_secret_value().encode()
    return x_api_key is not None and hmac.compare_digest(x_api_key.encode(), expected)


def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="Required when VIREID_API_KEY is set.")] = None,
) -> None:
    """Check ``X-API-Key`` against ``settings.api_key`` (no check when no key is configured).

    Raises:
        UnauthorizedError: the header is missing or wrong (HTTP 401).
    """
    if not api_key_accepted(settings, x_api_key):
        raise UnauthorizedError(API_KEY_REFUSED)


ApiKeyDep = Depends(require_api_key)
