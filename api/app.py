"""The FastAPI application factory (house-style §28)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from vireid.api._auth import ApiKeyBeforeBodyMiddleware
from vireid.api._docs import install_offline_docs
from vireid.api._limits import BodySizeLimitMiddleware
from vireid.api._malloc import release_large_buffers_to_os
from vireid.api._origin import CrossOriginWriteMiddleware
from vireid.api._page import install_search_page
from vireid.api.errors import install_error_handlers, public_reason
from vireid.api.metrics import install_metrics
from vireid.api.routes import gallery_router, health_router, models_router, search_router
from vireid.api.services import ServiceContext, open_context
from vireid.api.services._context import EmbedderLoader
from vireid.api.settings import Settings, get_settings

if TYPE_CHECKING:
    from vireid.serving.runtime import Embedder

__all__ = ["FORM_OVERHEAD_BYTES", "create_app"]

logger = logging.getLogger(__name__)


def _version() -> str:
    try:
        return version("vireid")
    except PackageNotFoundError:  # running from a source tree without install
        return "0.0.0"


#: Room on top of ``max_upload_bytes`` for multipart headers and form fields in one request body.
FORM_OVERHEAD_BYTES = 64 * 1024


def _load(app: FastAPI, settings: Settings, embedder: Embedder | None, loader: EmbedderLoader | None) -> None:
    try:
        context = open_context(
            settings, embedder=embedder, loader=loader, embed_metrics=app.state.embed_metrics
        )
    except Exception as exc:  # reported by /readyz; the process stays up for /healthz
        logger.exception("could not load the model or the gallery")
        app.state.load_error = public_reason(exc)
        return
    app.state.context = context
    logger.info("ready: %s model %s, dim %d", context.method, context.model_version, context.dim)


def _shutdown(context: ServiceContext) -> None:
    try:
        context.save_changed()
    finally:
        context.close()


def create_app(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    loader: EmbedderLoader | None = None,
) -> FastAPI:
    """Build the HTTP service. Nothing is loaded until the app starts (lifespan).

    The lifespan fixes glibc's mmap threshold (:mod:`vireid.api._malloc`: decoded uploads go back to the
    system when freed), loads the embedder, migrates and opens the database, loads (or rebuilds) both gallery
    indexes of the model's version, keeps them on ``app.state.context`` and saves the indexes on
    shutdown. When loading fails the app still starts: ``/healthz`` answers 200, ``/readyz`` and the
    gallery routes answer 503 with the reason.

    Args:
        settings: service settings; default :func:`get_settings` (environment). When given, they also
            replace the ``get_settings`` dependency of this app.
        embedder: an already built embedder (tests); default: the data dir's active model, else the
            one in ``settings.resolved_model_dir``.
        loader: builds an embedder from a model folder (tests); default ``load_embedder``.
    """
    resolved = settings if settings is not None else get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.context = None
        app.state.load_error = None
        release_large_buffers_to_os()
        await run_in_threadpool(_load, app, resolved, embedder, loader)
        try:
            yield
        finally:
            context: ServiceContext | None = app.state.context
            app.state.context = None
            if context is not None:
                await run_in_threadpool(_shutdown, context)

    app = FastAPI(
        title="vireid",
        version=_version(),
        summary="Visible-infrared person re-identification search.",
        lifespan=lifespan,
        docs_url=None,  # offline pages instead (install_offline_docs)
        redoc_url=None,
    )
    app.state.settings = resolved
    app.state.context = None
    app.state.load_error = None
    app.state.embed_metrics = None  # set by install_metrics when prometheus-client is there
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: resolved
    install_error_handlers(app)
    routers = (health_router, search_router, gallery_router, models_router)
    for router in routers:
        app.include_router(router)
    install_metrics(app)
    install_offline_docs(app)
    install_search_page(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=resolved.max_upload_bytes + FORM_OVERHEAD_BYTES,
        timeout_s=resolved.body_timeout_s,
    )
    # A write without a valid key is refused before anything reads its body.
    app.add_middleware(
        ApiKeyBeforeBodyMiddleware, settings=resolved, routes=[r for router in routers for r in router.routes]
    )
    # Outermost: writes from other web origins are refused unless configured; CORS only when configured.
    app.add_middleware(CrossOriginWriteMiddleware, allowed_origins=resolved.cors_origins)
    if resolved.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=resolved.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    return app
