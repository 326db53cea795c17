"""Fixtures for the API tests: fake embedder, a temporary data dir, started apps, both databases.

The settings return ``source`` (``VIREID_RETURN_SOURCE``, off by default) so that tests can check it.
The index store is the real one (exact flat FAISS index); ``IndexStore`` builds FAISS indexes only, so
``NumpyGalleryIndex`` serves as the reference the search results are compared with. ``db_settings``
runs a test on SQLite and on the machine's PostgreSQL (``VIREID_TEST_POSTGRES_URL``, default
127.0.0.1:5432/test; skipped when unreachable unless ``VIREID_REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import os
import uuid
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
    return Settings(
        data_dir=tmp_path / "data",
        max_upload_bytes=256 * 1024,
        max_image_pixels=1_000_000,
        return_source=True,
    )


_DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards (other tables are not touched)."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    base = os.environ.get("VIREID_TEST_POSTGRES_URL", _DEFAULT_POSTGRES_URL)
    engine = sqlalchemy.create_engine(base, connect_args={"connect_timeout": 3})
    schema = f"vireid_api_{uuid.uuid4().hex[:12]}"
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    except sqlalchemy.exc.OperationalError as exc:
        engine.dispose()
        if os.environ.get("VIREID_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable at {base}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {base}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The ``settings`` of the API tests on SQLite, then on a private PostgreSQL schema."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    return Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        max_upload_bytes=256 * 1024,
        max_image_pixels=1_000_000,
        return_source=True,
    )


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
