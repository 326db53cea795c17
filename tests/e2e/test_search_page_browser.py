"""The operator's search page in a real browser (issue #12, item 3): headless Chromium (Debian's
``chromium`` package, driven by Playwright for Python) against a live ``vireid serve`` process.

Uploads an infrared crop, waits for the results, checks that k thumbnails with scores render and that
each thumbnail is the stored crop of its gallery item; adds a crop through the page (which asks for the
API key); checks that ``/docs`` and ``/redoc`` render with every request outside the service blocked; and
that the page fits a phone-sized viewport. Screenshots go to ``$VIREID_TEST_ARTIFACTS`` (default
``./test-artifacts``). Skipped, with the reason, where Chromium or Playwright is missing.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")

API_KEY = "page-test-key"
K = 5


def _crop(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(8, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blocks).resize((64, 128), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live ``vireid serve`` on a tiny exported model, with 12 visible crops in its gallery."""
    from vireid.serving.export import export_model

    tmp = tmp_path_factory.mktemp("page")
    export_model("salcr", out_dir=tmp / "model", variant="tiny")
    port = _free_port()
    env = {**os.environ, "VIREID_API_KEY": API_KEY, "OMP_NUM_THREADS": "1"}
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vireid.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp / "data"),
            "--model-dir",
            str(tmp / "model"),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp / "server.log").read_text()
            assert time.monotonic() < deadline, "vireid serve did not become ready"
            time.sleep(0.3)
        crops = {seed: _crop(seed) for seed in range(12)}
        files = [("images", (f"v{seed}.png", data, "image/png")) for seed, data in crops.items()]
        response = httpx.post(
            f"{url}/gallery",
            files=files,
            data={"camera": "cam1", "modality": "visible", "track_id": "t1"},
            headers={"X-API-Key": API_KEY},
        )
        assert response.status_code == 201, response.text
        by_id = dict(zip(response.json()["ids"], crops.values(), strict=True))
        yield {"url": url, "crops": by_id, "tmp": tmp}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _until(page: Any, expression: str, timeout_s: float = 30.0) -> None:
    """Poll a JavaScript expression until it is true (``wait_for_function`` evaluates strings in the
    page, which the page's Content-Security-Policy rightly forbids)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def _artifacts() -> Path:
    folder = Path(os.environ.get("VIREID_TEST_ARTIFACTS", "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _offline(page: Any, url: str) -> list[str]:
    """Abort every request that does not go to the service; return the aborted URLs."""
    blocked: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(url) or r.request.url.startswith(("blob:", "data:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return blocked


def test_search_shows_k_stored_crops_with_scores(
    service: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    query = tmp_path / "query-ir.png"
    query.write_bytes(_crop(3))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    blocked = _offline(page, service["url"])
    page.goto(service["url"] + "/")
    page.wait_for_selector("#camera-table tr")  # the gallery overview loaded
    assert "12 visible" in page.inner_text("#overview")
    page.set_input_files("#query-file", str(query))
    page.select_option("#modality", "infrared")
    page.fill("#k", str(K))
    page.click("#search-button")
    _until(page, f"document.querySelectorAll('#matches .match').length === {K}")
    _until(
        page, "[...document.querySelectorAll('#matches img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    cards = page.query_selector_all("#matches .match")
    scores = []
    for card in cards:
        item_id = int(card.get_attribute("data-id"))
        score_text = card.query_selector(".score").inner_text()
        scores.append(float(score_text.split("·")[1]))
        src = card.query_selector("img").get_attribute("src")
        assert src == f"/gallery/{item_id}/image"
        assert page.request.get(service["url"] + src).body() == service["crops"][item_id]
        assert card.query_selector("img").evaluate("i => [i.naturalWidth, i.naturalHeight]") == [64, 128]
    assert scores == sorted(scores, reverse=True)
    # The query is shown next to its matches, and a click opens the match's metadata.
    assert page.is_visible("#results-query")
    cards[0].click()
    page.wait_for_selector("#detail-panel:not([hidden])")
    assert "cam1" in page.inner_text("#detail-fields")
    page.screenshot(path=str(_artifacts() / "search-page-1280x800.png"), full_page=True)
    assert blocked == []
    page.close()


def test_a_tracklet_query_grouped_by_track(service: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    paths = []
    for seed in (3, 4):
        paths.append(tmp_path / f"tracklet-{seed}.png")
        paths[-1].write_bytes(_crop(seed))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(service["url"] + "/")
    page.set_input_files("#query-file", [str(p) for p in paths])
    assert "and 1 more (one tracklet)" in page.inner_text("#drop-text")
    page.check("#group-by-track")
    page.click("#search-button")
    _until(page, "document.getElementById('results-summary').textContent.includes('tracklet of 2 crops')")
    assert "(one per track)" in page.inner_text("#results-summary")
    metas = [card.inner_text() for card in page.query_selector_all("#matches .match")]
    # All 12 gallery crops are track t1: one card for it (plus one per untracked crop a later test adds).
    assert sum("track t1 · 12 crops" in text for text in metas) == 1, metas
    page.close()


def test_writes_ask_for_the_api_key(service: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    crop = tmp_path / "new.png"
    crop.write_bytes(_crop(100))
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(service["url"] + "/")
    page.click("#add-panel summary")
    page.set_input_files("#add-files", str(crop))
    page.fill("#add-camera", "cam9")
    page.click("#add-form button[type=submit]")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", API_KEY)
    page.click("#key-ok")
    _until(page, "document.getElementById('status').textContent.startsWith('added 1')")
    _until(page, "document.getElementById('overview').textContent.includes('13 visible')")
    page.close()


def test_docs_render_offline(service: dict[str, Any], browser: Any) -> None:
    page = browser.new_page()
    blocked = _offline(page, service["url"])
    page.goto(service["url"] + "/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=30_000)
    assert "/search" in page.inner_text(".swagger-ui")
    page.goto(service["url"] + "/redoc")
    page.wait_for_selector("h1:has-text('vireid')", timeout=30_000)  # ReDoc rendered the document
    assert "/gallery/{item_id}/image" in page.inner_text("body")
    # The only outside request is the image of ReDoc's "API docs by Redocly" badge (cosmetic; it stays
    # blank offline): the page itself, its script and the OpenAPI document are all served locally.
    assert all(url.endswith("cdn.redoc.ly/redoc/logo-mini.svg") for url in blocked), blocked
    page.close()


def test_phone_viewport_has_no_horizontal_scroll(
    service: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    query = tmp_path / "q.png"
    query.write_bytes(_crop(5))
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(service["url"] + "/")
    page.set_input_files("#query-file", str(query))
    page.click("#search-button")
    _until(
        page,
        f"document.querySelectorAll('#matches .match').length === 10 || "
        f"document.querySelectorAll('#matches .match').length === {len(service['crops'])}",
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(_artifacts() / "search-page-390x844.png"), full_page=True)
    page.close()
