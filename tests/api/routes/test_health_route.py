"""/healthz, /readyz and the OpenAPI docs."""

from __future__ import annotations

from api_testkit import image_bytes, upload
from fastapi.testclient import TestClient

from vireid.api import Settings


def test_healthz_and_readyz_when_loaded(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    upload(client, [image_bytes(1)], modality="infrared")
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["model"] == {"method": "fake", "version": "fake0001"}
    assert body["gallery_size"] == {"visible": 0, "infrared": 1}


def test_not_ready_without_a_model(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from vireid.api import create_app

    settings = Settings(data_dir=tmp_path / "d", model_dir=tmp_path / "no-model")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "no-model" in ready.json()["detail"] or "manifest" in ready.json()["detail"]
        search = client.post("/search", files={"image": ("q.jpg", image_bytes(1), "image/jpeg")})
        assert search.status_code == 503 and "not loaded" in search.json()["detail"]
        assert client.get("/gallery/stats").status_code == 503


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/search", "/gallery", "/gallery/{item_id}", "/gallery/stats", "/healthz", "/readyz"} <= set(
        schema["paths"]
    )
