"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from files installed with the service, never a CDN.

FastAPI's default pages load their JavaScript and CSS from a CDN, so they are blank on an offline
host. Following FastAPI's self-hosting recipe, the pages here point at the assets that the
``fastapi-offline`` package ships (Swagger UI and ReDoc, MIT / Apache-2.0; see its licence file),
served under ``/static/docs`` (issue #12, item 4).
"""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_ASSETS_URL", "docs_assets_dir", "install_offline_docs"]

logger = logging.getLogger(__name__)

DOCS_ASSETS_URL = "/static/docs"


def docs_assets_dir() -> Path:
    """The folder of the installed Swagger UI / ReDoc assets.

    Raises:
        FileNotFoundError: ``fastapi-offline`` is not installed (it comes with ``vireid[api]``).
    """
    try:
        folder = Path(str(importlib.resources.files("fastapi_offline").joinpath("static")))
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "the Swagger UI / ReDoc assets come from the fastapi-offline package: pip install 'vireid[api]'"
        ) from exc
    if not (folder / "swagger-ui-bundle.js").is_file():
        raise FileNotFoundError(f"no swagger-ui-bundle.js in {folder}")
    return folder


def install_offline_docs(app: FastAPI) -> bool:
    """Serve ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc`` with locally installed assets.

    Create ``app`` with ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not there.

    Returns:
        False (and no pages) when the assets are not installed; the API works without them.
    """
    try:
        assets = docs_assets_dir()
    except FileNotFoundError as exc:
        logger.warning("no /docs or /redoc: %s", exc)
        return False
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    return True
