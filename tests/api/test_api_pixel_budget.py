"""Bounded memory per request (issue #15, item 6): the request pixel budget (413 from the headers,
before decoding) and decoding in chunks under the process-wide decode budget, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from api_testkit import FakeEmbedder, search, upload
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError

from vireid.api import Settings
from vireid.api.services import GalleryService, IngestRecord, open_context
from vireid.api.services._budget import PixelBudget, plan_chunks

SIDE = 40  # test images are SIDE x SIDE = 1600 pixels


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _budget_settings(base: Settings, **overrides: int) -> Settings:
    return base.model_copy(update={"max_image_pixels": 2000, **overrides})


class _BudgetWatcher(FakeEmbedder):
    """Records the decode budget in use at every embed call."""

    def __init__(self) -> None:
        super().__init__()
        self.budget: PixelBudget | None = None
        self.seen: list[int] = []
        self._seen_lock = threading.Lock()

    def embed(self, images: Sequence[Image.Image | np.ndarray], modality: str) -> np.ndarray:
        if self.budget is not None:
            with self._seen_lock:
                self.seen.append(self.budget.in_use)
        time.sleep(0.01)
        return super().embed(images, modality)


def test_settings_refuse_a_decode_budget_smaller_than_one_image() -> None:
    with pytest.raises(ValidationError, match="max_decode_pixels"):
        Settings(max_image_pixels=1000, max_decode_pixels=999)


def test_request_over_the_pixel_budget_is_413_before_any_decode(
    make_client: Callable[..., TestClient], db_settings: Settings, embedder: FakeEmbedder
) -> None:
    client = make_client(_budget_settings(db_settings, max_request_pixels=3 * SIDE * SIDE))
    files = [("images", (f"{n}.png", _png(n), "image/png")) for n in range(4)]
    response = client.post("/gallery", files=files, data={"camera": "c1", "modality": "visible"})
    assert response.status_code == 413
    assert "6400 pixels in all, more than the 4800 allowed" in response.json()["detail"]
    assert embedder.calls == []
    assert client.get("/gallery/stats").json()["total"] == 0
    # At the budget it is accepted, and the service keeps answering.
    assert len(upload(client, [_png(n) for n in range(3)])) == 3
    query = client.post(
        "/search",
        files={"image": ("q.png", _png(9), "image/png")},
        data={"modality": "infrared"},
    )
    assert query.status_code == 200


def test_search_over_the_request_budget_is_413(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    client = make_client(_budget_settings(settings, max_request_pixels=SIDE * SIDE - 1))
    response = client.post("/search", files={"image": ("q.png", _png(1), "image/png")})
    assert response.status_code == 413
    assert "more than the 1599 allowed per request" in response.json()["detail"]


def test_upload_is_decoded_and_embedded_in_chunks(
    make_client: Callable[..., TestClient], db_settings: Settings, embedder: FakeEmbedder
) -> None:
    # Two images (3200 pixels) fit in the 3300-pixel decode budget, a third does not.
    client = make_client(_budget_settings(db_settings, max_decode_pixels=3300))
    images = [_png(n) for n in range(5)]
    ids = upload(client, images)
    assert [n for n, _ in embedder.calls] == [2, 2, 1]
    # Same ids order and same vectors as one-chunk ingest: each image finds itself first.
    for n, data in enumerate(images):
        assert search(client, data, modality="infrared", k=1)["matches"][0]["id"] == ids[n]


def test_decoded_pixels_in_flight_stay_under_the_budget_across_requests(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    watcher = _BudgetWatcher()
    capacity = 2 * SIDE * SIDE
    client = make_client(_budget_settings(settings, max_decode_pixels=capacity), fake=watcher)
    watcher.budget = client.app.state.context.decode_budget  # type: ignore[attr-defined]
    upload(client, [_png(n) for n in range(4)])

    def query(n: int) -> int:
        return client.post("/search", files={"image": ("q.png", _png(n), "image/png")}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(query, range(16)))
    assert codes == [200] * 16
    assert watcher.seen and max(watcher.seen) <= capacity
    assert max(watcher.seen) == capacity  # the budget was actually contended, not trivially idle


def test_command_ingest_reports_a_truncated_image_and_its_copies(tmp_path: Path, settings: Settings) -> None:
    good = [_png(n) for n in range(3)]
    truncated = _png(7)[:-60]
    records = [
        IngestRecord(source=f"f{n}.png", camera="c", modality="visible", data=data)
        for n, data in enumerate([good[0], truncated, good[1], truncated, good[2]])
    ]
    context = open_context(_budget_settings(settings, max_decode_pixels=2000), embedder=FakeEmbedder())
    try:
        report = GalleryService(context).ingest(records, batch_size=5)
    finally:
        context.close()
    assert [o.status for o in report.outcomes] == ["added", "failed", "added", "failed", "added"]
    assert "truncated" in (report.outcomes[1].reason or "")
    assert report.outcomes[3].reason == report.outcomes[1].reason


def test_plan_chunks_bounds_pixels_and_count() -> None:
    sizes = [5, 5, 5, 20, 1, 1, 1, 1]
    chunks = plan_chunks(sizes, lambda n: n, max_pixels=10, max_items=3)
    assert chunks == [[5, 5], [5], [20], [1, 1, 1], [1]]
    assert plan_chunks([], lambda n: n, max_pixels=1, max_items=1) == []
    with pytest.raises(ValueError):
        plan_chunks(sizes, lambda n: n, max_pixels=0, max_items=1)


def test_pixel_budget_blocks_until_released() -> None:
    budget = PixelBudget(10)
    order: list[str] = []
    seen_inside: list[int] = []

    def second() -> None:
        with budget.reserve(5):
            order.append("second")
            seen_inside.append(budget.in_use)

    with budget.reserve(8):
        worker = threading.Thread(target=second)
        worker.start()
        time.sleep(0.05)
        order.append("first released")
    worker.join(timeout=5)
    assert order == ["first released", "second"]
    assert seen_inside == [5] and budget.in_use == 0
    with pytest.raises(ValueError):
        PixelBudget(0)
    # A reservation over the capacity is clamped, so it cannot wait forever.
    fresh = PixelBudget(10)
    with fresh.reserve(50):
        assert fresh.in_use == 10
    assert fresh.in_use == 0
