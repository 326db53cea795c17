"""Model versions (issue #13, items 2-3): list, register, reindex from the stored crops, hot swap with
searches running, persistence across restarts, delete; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_testkit import FakeEmbedder, FakeManifest, image_bytes, search, upload
from fastapi.testclient import TestClient

from vireid.api import Settings, create_app
from vireid.api.services import ModelService

KEY = {"X-API-Key": "k"}


def _model_dir(root: Path, version: str) -> Path:
    folder = root / f"export-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"model_version": version, "method": "fake", "variant": "tiny", "embedding_dim": 48}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "visible.onnx").write_bytes(b"graph")
    return folder


def _loader(folder: Path) -> FakeEmbedder:
    data = json.loads((folder / "manifest.json").read_text())
    return FakeEmbedder(
        FakeManifest(model_version=data["model_version"], method=data["method"], variant=data["variant"])
    )


@pytest.fixture
def keyed(db_settings: Settings) -> Settings:
    return Settings.model_validate({**db_settings.model_dump(), "api_key": "k", "model_dir": None})


@pytest.fixture
def app_client(keyed: Settings, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def start(**kwargs: object) -> TestClient:
        settings = keyed.model_copy(update={"model_dir": _model_dir(tmp_path, "fake0001")})
        client = TestClient(create_app(settings, loader=_loader, **kwargs), raise_server_exceptions=False)  # type: ignore[arg-type]
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


def _context(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.context  # type: ignore[attr-defined]


def test_second_version_lifecycle(app_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = app_client()
    ids = upload(client, [image_bytes(s) for s in range(6)], headers=KEY)
    upload(client, [image_bytes(s) for s in range(10, 13)], modality="infrared", headers=KEY)
    listing = client.get("/models").json()
    assert listing["active"] == "fake0001" and listing["gallery"] == {"visible": 6, "infrared": 3}
    [first] = listing["models"]
    assert first["complete"] and first["active"] and first["variant"] == "tiny"

    service = ModelService(_context(client))
    version = service.register(_model_dir(tmp_path, "fake0002"))
    assert version == "fake0002"
    second = next(m for m in client.get("/models").json()["models"] if m["version"] == "fake0002")
    assert second["gallery"] == {"visible": 0, "infrared": 0} and not second["complete"]
    refused = client.post("/models/fake0002/activate", headers=KEY)
    assert refused.status_code == 409 and "holds 0 of 6 visible" in refused.json()["detail"]
    assert client.post("/models/fake0002/activate").status_code == 401

    assert service.remaining("fake0002") == 9
    report = service.reindex("fake0002", batch_size=4)
    assert (report.added, report.no_crop, report.complete) == (9, 0, True)
    assert service.reindex("fake0002").added == 0  # resumable: nothing left

    before = search(client, image_bytes(2), k=3)
    assert before["model"]["version"] == "fake0001"
    activated = client.post("/models/fake0002/activate", headers=KEY)
    assert activated.status_code == 200 and activated.json()["active"]
    after = search(client, image_bytes(2), k=3)
    assert after["model"]["version"] == "fake0002"
    # Same crops, same fake embedding: the same images come first, under the new version's ids.
    assert [m["score"] for m in after["matches"]] == [m["score"] for m in before["matches"]]
    assert client.get("/readyz").json()["model"]["version"] == "fake0002"

    assert client.delete("/models/fake0002", headers=KEY).status_code == 409
    assert client.delete("/models/nope", headers=KEY).status_code == 404
    assert client.post("/models/nope/activate", headers=KEY).status_code == 404
    assert client.post("/models/..%2Fetc/activate", headers=KEY).status_code in (404, 422)
    assert client.delete("/models/fake0001", headers=KEY).status_code == 204
    assert [m["version"] for m in client.get("/models").json()["models"]] == ["fake0002"]
    assert client.get(f"/gallery/{ids[0]}").status_code == 404  # the old version's rows are gone
    assert client.get("/gallery/stats").json()["total"] == 9


def test_active_version_persists_across_restarts(
    app_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    first = app_client()
    upload(first, [image_bytes(s) for s in range(3)], headers=KEY)
    service = ModelService(_context(first))
    service.register(_model_dir(tmp_path, "fake0002"))
    service.reindex("fake0002")
    assert first.post("/models/fake0002/activate", headers=KEY).status_code == 200
    first.__exit__(None, None, None)
    # The configured model dir still holds fake0001: the registry's active version wins.
    second = app_client()
    assert second.get("/readyz").json()["model"]["version"] == "fake0002"
    assert search(second, image_bytes(1), k=1)["model"]["version"] == "fake0002"


def test_hot_swap_under_concurrent_searches(app_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = app_client()
    upload(client, [image_bytes(s) for s in range(8)], headers=KEY)
    service = ModelService(_context(client))
    service.register(_model_dir(tmp_path, "fake0002"))
    service.reindex("fake0002")
    versions: list[str] = []
    failures: list[int] = []
    stop = threading.Event()

    def searching() -> None:
        while not stop.is_set():
            response = client.post("/search", files={"image": ("q.jpg", image_bytes(3), "image/jpeg")})
            if response.status_code != 200:
                failures.append(response.status_code)
            else:
                versions.append(response.json()["model"]["version"])

    threads = [threading.Thread(target=searching) for _ in range(4)]
    for thread in threads:
        thread.start()
    while len(versions) < 10:
        pass
    assert client.post("/models/fake0002/activate", headers=KEY).status_code == 200
    seen = len(versions)
    while len(versions) < seen + 10:
        pass
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert versions[0] == "fake0001" and versions[-1] == "fake0002"
    switch = versions.index("fake0002")
    assert set(versions[switch + 8 :]) == {"fake0002"}  # after the switch no new request uses the old one


def test_delete_removes_the_image_from_every_version(
    app_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = app_client()
    ids = upload(client, [image_bytes(s) for s in range(3)], headers=KEY)
    service = ModelService(_context(client))
    service.register(_model_dir(tmp_path, "fake0002"))
    service.reindex("fake0002")
    assert client.delete(f"/gallery/{ids[0]}", headers=KEY).status_code == 204
    counts = {m["version"]: m["gallery"]["visible"] for m in client.get("/models").json()["models"]}
    assert counts == {"fake0001": 2, "fake0002": 2}
    assert client.post("/models/fake0002/activate", headers=KEY).status_code == 200
    assert client.get("/gallery/stats").json()["total"] == 2


def test_reindex_reports_images_without_a_stored_crop(
    app_client: Callable[..., TestClient], keyed: Settings, tmp_path: Path
) -> None:
    client = app_client()
    upload(client, [image_bytes(s) for s in range(2)], headers=KEY)
    for crop in (keyed.data_dir / "crops").glob("??/*"):
        crop.unlink()
        break
    service = ModelService(_context(client))
    service.register(_model_dir(tmp_path, "fake0002"))
    report = service.reindex("fake0002")
    assert (report.added, report.no_crop, report.complete) == (1, 1, False)
    assert client.post("/models/fake0002/activate", headers=KEY).status_code == 409
