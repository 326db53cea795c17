"""Safe defaults (issue #15, item 10): cross-origin writes refused unless configured, CORS only when
configured, no server paths in error bodies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from api_testkit import image_bytes
from fastapi.testclient import TestClient
from pydantic import ValidationError

from vireid.api import Settings, create_app
from vireid.api.errors import public_reason, redact_paths

FILES = {"images": ("a.jpg", image_bytes(1), "image/jpeg")}
FORM = {"camera": "c1", "modality": "visible"}


def test_cross_origin_writes_are_refused_by_default(client: TestClient) -> None:
    evil = {"Origin": "https://evil.example"}
    response = client.post("/gallery", files=FILES, data=FORM, headers=evil)
    assert response.status_code == 403
    assert "cross-origin request from https://evil.example refused" in response.json()["detail"]
    assert client.get("/gallery/stats").json()["total"] == 0
    assert (
        client.post(
            "/search", files={"image": ("q.jpg", image_bytes(1), "image/jpeg")}, headers=evil
        ).status_code
        == 403
    )
    assert client.delete("/gallery/1", headers=evil).status_code == 403
    assert client.post("/gallery", files=FILES, data=FORM, headers={"Origin": "null"}).status_code == 403
    # No CORS headers are sent, and reads stay open (the browser keeps the page from reading them).
    read = client.get("/gallery/stats", headers=evil)
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


def test_same_origin_and_non_browser_writes_pass(client: TestClient) -> None:
    # TestClient sends Host: testserver.
    assert (
        client.post("/gallery", files=FILES, data=FORM, headers={"Origin": "http://testserver"}).status_code
        == 201
    )
    assert (
        client.post(
            "/gallery", files={"images": ("b.jpg", image_bytes(2), "image/jpeg")}, data=FORM
        ).status_code
        == 201
    )


def test_configured_origin_gets_cors_and_may_write(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    client = make_client(settings.model_copy(update={"cors_origins": ["https://ops.example"]}))
    preflight = client.options(
        "/gallery",
        headers={
            "Origin": "https://ops.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-API-Key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://ops.example"
    response = client.post("/gallery", files=FILES, data=FORM, headers={"Origin": "https://ops.example"})
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == "https://ops.example"
    assert (
        client.post(
            "/gallery", files=FILES, data=FORM, headers={"Origin": "https://other.example"}
        ).status_code
        == 403
    )


def test_cors_origins_setting_is_parsed_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIREID_CORS_ORIGINS", "https://a.example, http://b.example:8080/")
    assert Settings().cors_origins == ["https://a.example", "http://b.example:8080"]
    monkeypatch.setenv("VIREID_CORS_ORIGINS", "")
    assert Settings().cors_origins == []
    for bad in ("*", "a.example", "https://a.example/path"):
        monkeypatch.setenv("VIREID_CORS_ORIGINS", bad)
        with pytest.raises(ValidationError, match="cors_origins"):
            Settings()


def test_not_ready_bodies_name_no_server_path(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "secret-place" / "data", model_dir=tmp_path / "secret-place" / "model"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        search = client.post("/search", files={"image": ("q.jpg", image_bytes(1), "image/jpeg")})
    assert ready.status_code == 503 and search.status_code == 503
    for body in (ready.text, search.text):
        assert "secret-place" not in body and str(tmp_path) not in body
    assert "…/model" in ready.json()["detail"] or "…/manifest.json" in ready.json()["detail"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no manifest in /srv/vireid/models/v3 (missing)", "no manifest in …/v3 (missing)"),
        ("No such file: '/data/model/manifest.json'", "No such file: '…/manifest.json'"),
        ("C:\\models\\v3\\visible.onnx is bad", "…/visible.onnx is bad"),
        ("sqlite:////var/lib/vireid/gallery.db", "sqlite:///…/gallery.db"),
        (
            "relative/path and http://host:8000/x and 1/2 stay",
            "relative/path and http://host:8000/x and 1/2 stay",
        ),
    ],
)
def test_redact_paths(text: str, expected: str) -> None:
    assert redact_paths(text) == expected


def test_public_reason_names_the_type() -> None:
    assert public_reason(FileNotFoundError("/a/b/c.json")) == "FileNotFoundError: …/c.json"
