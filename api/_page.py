"""The operator's search page at ``/``: plain HTML, CSS and JavaScript shipped in the package
(``vireid/api/static``), no CDN and no build step (issue #12, item 2).

The page calls the public routes only (``/search``, ``/gallery/...``, ``/readyz``); it asks for the API
key when a write answers 401 and keeps it for the browser tab. It is served with a strict
Content-Security-Policy: scripts, styles and connections to this origin only; images also from
``blob:`` (the query preview).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["PAGE_ASSETS_URL", "STATIC_DIR", "install_search_page"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_ASSETS_URL = "/static/app"

_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install_search_page(app: FastAPI) -> None:
    """Serve the search page at ``/`` and its assets under ``/static/app``.

    Raises:
        FileNotFoundError: the package was installed without its ``static`` folder.
    """
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"search page missing: {index} (reinstall vireid)")
    app.mount(PAGE_ASSETS_URL, StaticFiles(directory=STATIC_DIR), name="page-assets")

    @app.get("/", include_in_schema=False)
    def search_page() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=_PAGE_HEADERS)
