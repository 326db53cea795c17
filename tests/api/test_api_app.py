"""create_app: lifespan, restart on the same data dir, body-size limit, metrics, settings override."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_testkit import FakeEmbedder, image_bytes, search, upload
from fastapi.testclient import TestClient

from vireid.api import Settings, create_app, get_settings
from vireid.api.app import FORM_OVERHEAD_BYTES


def test_restart_on_same_data_dir_gives_identical_results(settings: Settings) -> None:
    queries = [image_bytes(s) for s in (100, 101, 3)]
    with TestClient(create_app(settings, embedder=FakeEmbedder())) as first:
        upload(first, [image_bytes(s) for s in range(10)], camera="camA")
        upload(first, [image_bytes(s) for s in range(10, 15)], camera="camB", modality="infrared")
        before = [search(first, q, k=6)["matches"] for q in queries]
        before_ir = search(first, image_bytes(12), modality="visible", k=3)["matches"]
    with TestClient(create_app(settings, embedder=FakeEmbedder())) as second:
        assert [search(second, q, k=6)["matches"] for q in queries] == before
        assert search(second, image_bytes(12), modality="visible", k=3)["matches"] == before_ir
        assert second.get("/gallery/stats").json()["total"] == 15


def test_restart_after_lost_index_files_rebuilds_from_sql(settings: Settings) -> None:
    with TestClient(create_app(settings, embedder=FakeEmbedder())) as first:
        ids = upload(first, [image_bytes(s) for s in range(5)])
        before = search(first, image_bytes(2), k=5)["matches"]
    for path in (settings.data_dir / "indexes").rglob("*.faiss"):
        path.write_bytes(b"garbage")
    with TestClient(create_app(settings, embedder=FakeEmbedder())) as second:
        assert search(second, image_bytes(2), k=5)["matches"] == before
        assert sorted(m["id"] for m in before) == ids


def test_startup_removes_temp_files_of_an_interrupted_index_save(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(settings, embedder=FakeEmbedder())) as first:
        upload(first, [image_bytes(s) for s in range(3)])
        before = search(first, image_bytes(1), k=3)["matches"]
    folder = next((settings.data_dir / "indexes").iterdir())
    # What a writer killed between mkstemp and rename leaves (pid 2**22 + 1 is above Linux's pid_max).
    leftover = folder / f".visible.faiss.{2**22 + 1}-q1w2e3r4.tmp"
    leftover.write_bytes(b"partial index")
    caplog.set_level("INFO", logger="vireid.index")
    with TestClient(create_app(settings, embedder=FakeEmbedder())) as second:
        assert not leftover.exists()
        assert search(second, image_bytes(1), k=3)["matches"] == before
    assert "removed stale temp file" in caplog.text


def _chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_body_limit_enforced_while_reading_without_content_length(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    caplog.set_level("INFO", logger="vireid.api._limits")
    big = image_bytes(1, fmt="BMP", size=(400, 400))
    request = client.build_request("POST", "/search", files={"image": ("big.bmp", big, "image/bmp")})
    body = request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    headers["transfer-encoding"] = "chunked"
    assert len(body) > settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    response = client.post("/search", content=_chunked(body), headers=headers)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert isinstance(response, httpx.Response)
    assert "body over" in caplog.text  # refused while reading, not from a declared length
    assert search(client, image_bytes(1))["matches"] == []  # still answering


def test_file_just_over_limit_inside_body_allowance_is_413(client: TestClient, settings: Settings) -> None:
    data = b"\xff" * (settings.max_upload_bytes + 10)
    response = client.post("/search", files={"image": ("x.jpg", data, "image/jpeg")})
    assert response.status_code == 413


def test_metrics_endpoint(client: TestClient) -> None:
    search(client, image_bytes(1))
    client.get("/gallery/999")
    text = client.get("/metrics").text
    assert 'vireid_http_requests_total{method="POST",route="/search",status="200"} 1.0' in text
    assert 'route="/gallery/{item_id}",status="404"' in text


def test_explicit_settings_replace_the_dependency(settings: Settings) -> None:
    app = create_app(settings, embedder=FakeEmbedder())
    assert app.dependency_overrides[get_settings]() is settings


def test_get_settings_reads_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VIREID_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIREID_MAX_UPLOAD_BYTES", "1234")
    get_settings.cache_clear()
    try:
        loaded = get_settings()
        assert loaded.data_dir == tmp_path and loaded.max_upload_bytes == 1234
        assert get_settings() is loaded
    finally:
        get_settings.cache_clear()


def test_nothing_is_loaded_before_startup(settings: Settings) -> None:
    embedder = FakeEmbedder()
    app = create_app(settings, embedder=embedder)
    assert app.state.context is None
    assert not settings.data_dir.exists()
