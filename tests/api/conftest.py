"""Fixtures for the API tests: fake embedder, a temporary data dir, started apps.

The index store is the real one (exact flat FAISS index); ``IndexStore`` builds FAISS indexes only, so
``NumpyGalleryIndex`` serves as the reference the search results are compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_testkit import FakeEmbedder
from fastapi.testclient import TestClient

from vireid.api import Settings, create_app


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_upload_bytes=256 * 1024, max_image_pixels=1_000_000)


@pytest.fixture
def make_client(embedder: FakeEmbedder) -> Iterator[Callable[..., TestClient]]:
    """Start apps (lifespan run) on given settings; all are shut down at the end of the test."""
    clients: list[TestClient] = []

    def start(settings: Settings, *, fake: FakeEmbedder | None = None) -> TestClient:
        client = TestClient(create_app(settings, embedder=fake or embedder), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    return make_client(settings)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's VIREID_* variables out of the tests."""
    import os

    for name in list(os.environ):
        if name.startswith("VIREID_"):
            monkeypatch.delenv(name)
