"""The HTTP contract with VIREID_INDEX_BACKEND=milvus (Milvus Lite): the same answers as the FAISS
backend through ingest, search, filters and delete; restarts keep the gallery; a tampered collection
is repaired from SQL at start-up."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from api_testkit import FakeEmbedder, image_bytes, noise_image, search, upload
from fastapi.testclient import TestClient

from vireid.api import Settings, create_app

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")


@pytest.fixture(scope="module")
def milvus_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Milvus Lite file (one in-process server) for the module; tests use their own prefixes."""
    return str(tmp_path_factory.mktemp("milvus") / "lite.db")


def _settings(data_dir: Path, **fields: object) -> Settings:
    return Settings(
        data_dir=data_dir,
        max_upload_bytes=256 * 1024,
        max_image_pixels=1_000_000,
        return_source=True,
        **fields,  # type: ignore[arg-type]
    )


def _milvus(data_dir: Path, milvus_file: str, prefix: str, **fields: object) -> Settings:
    return _settings(
        data_dir, index_backend="milvus", milvus_uri=milvus_file, milvus_collection_prefix=prefix, **fields
    )


def _fill(client: TestClient) -> list[int]:
    ids = upload(
        client, [image_bytes(s) for s in range(10)], camera="camA", captured_at="2024-01-01T08:00:00Z"
    )
    ids += upload(client, [image_bytes(s) for s in range(100, 106)], camera="camB")
    ids += upload(
        client,
        [image_bytes(s) for s in range(200, 208)],
        camera="camC",
        captured_at="2024-01-03T12:30:00.25Z",
    )
    ids += upload(client, [image_bytes(s) for s in range(300, 304)], camera="cam3", modality="infrared")
    return ids


QUERIES: list[dict[str, str | int]] = [
    {"k": 5},
    {"k": 1000},
    {"k": 4, "cameras": "camB"},
    {"k": 30, "cameras": "camA, camC"},
    {"k": 7, "since": "2024-01-02T00:00:00Z"},
    {"k": 7, "until": "2024-01-02T00:00:00Z"},
    {"k": 20, "since": "2024-01-01T08:00:00Z", "until": "2024-01-03T12:30:00.25Z"},
    {"k": 3, "cameras": "camC", "since": "2024-01-03T12:30:00.25Z"},
    {"k": 3, "cameras": "nope"},
    {"k": 5, "modality": "visible"},  # infrared gallery
]


def _answers(client: TestClient) -> list[list[tuple[int, float]]]:
    out = []
    for seed in (0, 3, 101, 205, 999):
        for fields in QUERIES:
            body = search(client, image_bytes(seed), **fields)
            out.append([(m["id"], round(m["score"], 5)) for m in body["matches"]])
    return out


def test_milvus_answers_like_faiss(
    make_client: Callable[..., TestClient], tmp_path: Path, milvus_file: str
) -> None:
    faiss = make_client(_settings(tmp_path / "faiss"))
    milvus = make_client(_milvus(tmp_path / "milvus", milvus_file, f"t{uuid.uuid4().hex[:8]}"))
    ids = _fill(faiss)
    assert _fill(milvus) == ids  # same SQL ids in both data dirs
    want = _answers(faiss)
    assert _answers(milvus) == want
    assert sum(len(a) for a in want) > 100
    for client in (faiss, milvus):
        assert client.delete(f"/gallery/{ids[0]}").status_code == 204
        assert client.delete(f"/gallery/{ids[11]}").status_code == 204
    after = _answers(milvus)
    assert after == _answers(faiss) and after != want
    assert all(ids[0] not in [i for i, _ in a] for a in after)
    assert milvus.get("/gallery/stats").json() == faiss.get("/gallery/stats").json()


def test_restart_keeps_the_gallery_and_repairs_a_tampered_collection(
    tmp_path: Path, milvus_file: str, embedder: FakeEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    from vireid.index import MilvusGalleryIndex, milvus_collection_name, milvus_connect

    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = _milvus(tmp_path / "data", milvus_file, prefix)
    with TestClient(create_app(settings, embedder=embedder)) as client:
        ids = _fill(client)
        before = _answers(client)
    with TestClient(create_app(settings, embedder=embedder)) as client:
        assert _answers(client) == before  # nothing rebuilt, nothing lost
    milvus = milvus_connect(milvus_file)
    name = milvus_collection_name("fake0001", "visible", prefix=prefix)
    milvus.delete(name, ids=ids[:3])  # rows lost from Milvus ...
    MilvusGalleryIndex(milvus, name, dim=embedder.manifest.embedding_dim).add(  # ... and a row SQL lacks
        [99_999], embedder.embed([noise_image(0)], "visible"), cameras=["camA"], captured_at=[None]
    )
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings, embedder=embedder)) as client:
        assert _answers(client) == before
    assert f"Milvus collection {name} holds 22 ids" in caplog.text
    assert "deleting 1 ids SQL lacks, adding 3" in caplog.text


def test_settings_pick_and_check_the_backend(tmp_path: Path) -> None:
    settings = _settings(tmp_path, index_backend="milvus")
    assert settings.resolved_milvus_uri == str((tmp_path / "milvus.db").resolve())
    with pytest.raises(ValueError, match=r"\.db"):
        _settings(tmp_path, index_backend="milvus", milvus_uri=str(tmp_path / "milvus"))
    with pytest.raises(ValueError):
        _settings(tmp_path, milvus_collection_prefix="bad-prefix")
    assert _settings(tmp_path, milvus_uri="").milvus_uri is None


def test_model_versions_on_milvus(tmp_path: Path, milvus_file: str) -> None:
    """Reindex into a second version's collections, delete an item from both, activate the second,
    delete the first: its collections are dropped."""
    from test_api_models import _loader, _model_dir

    from vireid.api.services import ModelService
    from vireid.index import milvus_collection_name, milvus_connect

    prefix = f"t{uuid.uuid4().hex[:8]}"
    key = {"X-API-Key": "k"}
    settings = _milvus(
        tmp_path / "data", milvus_file, prefix, api_key="k", model_dir=_model_dir(tmp_path, "fake0001")
    )
    milvus = milvus_connect(milvus_file)
    names = {
        (v, m): milvus_collection_name(v, m, prefix=prefix)
        for v in ("fake0001", "fake0002")
        for m in ("visible", "infrared")
    }
    with TestClient(create_app(settings, loader=_loader), raise_server_exceptions=False) as client:
        ids = upload(client, [image_bytes(s) for s in range(5)], headers=key)
        service = ModelService(client.app.state.context)  # type: ignore[attr-defined]
        service.register(_model_dir(tmp_path, "fake0002"))
        assert service.reindex("fake0002", batch_size=2).added == 5
        assert client.delete(f"/gallery/{ids[0]}", headers=key).status_code == 204
        for version in ("fake0001", "fake0002"):  # gone from both versions' collections
            rows = milvus.query(names[(version, "visible")], filter="", output_fields=["count(*)"])
            assert rows[0]["count(*)"] == 4, version
        before = search(client, image_bytes(2), k=3)
        assert client.post("/models/fake0002/activate", headers=key).status_code == 200
        after = search(client, image_bytes(2), k=3)
        assert after["model"]["version"] == "fake0002"
        assert [m["score"] for m in after["matches"]] == [m["score"] for m in before["matches"]]
        assert client.delete("/models/fake0001", headers=key).status_code == 204
    assert not milvus.has_collection(names[("fake0001", "visible")])
    assert not milvus.has_collection(names[("fake0001", "infrared")])
    assert milvus.has_collection(names[("fake0002", "visible")])
