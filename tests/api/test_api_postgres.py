"""The service on PostgreSQL: gallery round trip and restart, in a throw-away schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_testkit import FakeEmbedder, image_bytes, search, upload
from fastapi.testclient import TestClient

from vireid.api import Settings, create_app

pytestmark = pytest.mark.postgres


def test_gallery_and_restart_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    with TestClient(create_app(settings, embedder=FakeEmbedder())) as first:
        assert first.get("/readyz").status_code == 200
        ids = upload(first, [image_bytes(s) for s in range(4)], captured_at="2024-01-01T00:00:00Z")
        assert upload(first, [image_bytes(0)]) == ids[:1]
        assert first.delete(f"/gallery/{ids[3]}").status_code == 204
        before = search(first, image_bytes(2), k=3, since="2023-12-31T00:00:00Z")["matches"]
        found = [m["id"] for m in before]
        assert found[0] == ids[2] and ids[3] not in found
    with TestClient(create_app(settings, embedder=FakeEmbedder())) as second:
        assert search(second, image_bytes(2), k=3, since="2023-12-31T00:00:00Z")["matches"] == before
        assert second.get("/gallery/stats").json()["total"] == 3
