"""The search page and the API docs are served by the service itself, with no outside URL (issue #12)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

_OUTSIDE = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def test_page_and_its_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert not _OUTSIDE.search(page.text)
    for asset, media in (("/static/app/app.js", "javascript"), ("/static/app/app.css", "text/css")):
        response = client.get(asset)
        assert response.status_code == 200 and media in response.headers["content-type"]
        assert "http://" not in response.text and "https://" not in response.text
    # Values from the service reach the page through textContent only.
    assert "innerHTML" not in client.get("/static/app/app.js").text


def test_docs_and_redoc_use_local_assets(client: TestClient) -> None:
    for url, asset in (
        ("/docs", "/static/docs/swagger-ui-bundle.js"),
        ("/redoc", "/static/docs/redoc.standalone.js"),
    ):
        html = client.get(url)
        assert html.status_code == 200
        assert asset in html.text and not _OUTSIDE.search(html.text), html.text
        assert client.get(asset).status_code == 200
    assert client.get("/docs/oauth2-redirect").status_code == 200
    # Neither page is part of the API schema.
    assert set(client.get("/openapi.json").json()["paths"]) >= {"/search", "/gallery"}
    assert "/" not in client.get("/openapi.json").json()["paths"]
