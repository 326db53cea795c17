"""Stored crops through the API, on SQLite and PostgreSQL (issue #12, item 1): served with their type and
cache headers, deleted with their last item, never orphaned by a failed or killed write."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable

from api_testkit import FakeEmbedder, image_bytes, search, upload
from fastapi.testclient import TestClient

from vireid.api import Settings


def _crops(settings: Settings) -> list[str]:
    root = settings.data_dir / "crops"
    return sorted(p.name for p in root.glob("??/*")) if root.is_dir() else []


def test_image_route_serves_the_stored_bytes(client: TestClient, settings: Settings) -> None:
    png, jpeg = image_bytes(1, "PNG"), image_bytes(2, "JPEG")
    ids = upload(client, [png, jpeg])
    for item_id, data, media in zip(ids, (png, jpeg), ("image/png", "image/jpeg"), strict=True):
        response = client.get(f"/gallery/{item_id}/image")
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == media
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        assert response.headers["etag"] == etag
        assert "immutable" in response.headers["cache-control"]
        cached = client.get(f"/gallery/{item_id}/image", headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b""
    assert client.get("/gallery/999999/image").status_code == 404
    assert client.get("/gallery/9223372036854775808/image").status_code == 422
    # The search results point at the same crops.
    top = search(client, png, k=1)["matches"][0]
    assert client.get(f"/gallery/{top['id']}/image").content == png


def test_delete_removes_the_crop_with_its_last_item(
    make_client: Callable[..., TestClient], db_settings: Settings
) -> None:
    client = make_client(db_settings)
    data = image_bytes(5)
    [visible] = upload(client, [data], modality="visible")
    [infrared] = upload(client, [data], modality="infrared")
    assert len(_crops(db_settings)) == 1  # one file for both items
    assert client.delete(f"/gallery/{visible}").status_code == 204
    assert len(_crops(db_settings)) == 1 and client.get(f"/gallery/{infrared}/image").status_code == 200
    assert client.delete(f"/gallery/{infrared}").status_code == 204
    assert _crops(db_settings) == []


def test_failed_ingest_stores_no_crop(make_client: Callable[..., TestClient], db_settings: Settings) -> None:
    fake = FakeEmbedder()
    client = make_client(db_settings, fake=fake)
    upload(client, [image_bytes(1)])
    fake.fail_after = len(fake.calls)
    files = [("images", ("x.jpg", image_bytes(2), "image/jpeg"))]
    response = client.post("/gallery", files=files, data={"camera": "c", "modality": "visible"})
    assert response.status_code == 500
    assert len(_crops(db_settings)) == 1


def test_crops_left_by_a_killed_ingest_are_removed_at_start(
    make_client: Callable[..., TestClient], db_settings: Settings
) -> None:
    first = make_client(db_settings)
    [kept] = upload(first, [image_bytes(1)])
    # What a writer killed after storing a crop but before committing its row leaves behind.
    orphan = image_bytes(2)
    sha = hashlib.sha256(orphan).hexdigest()
    crop = db_settings.data_dir / "crops" / sha[:2] / sha
    crop.parent.mkdir(parents=True, exist_ok=True)
    crop.write_bytes(orphan)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    journal = db_settings.data_dir / "crops" / ".pending" / f"{dead.pid}-{'d' * 32}.json"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text(json.dumps({"sha256": [sha]}))

    second = make_client(db_settings)
    assert not crop.exists() and not journal.exists()
    assert second.get(f"/gallery/{kept}/image").status_code == 200


def test_store_crops_off(make_client: Callable[..., TestClient], settings: Settings) -> None:
    client = make_client(settings.model_copy(update={"store_crops": False}))
    [item_id] = upload(client, [image_bytes(1)])
    response = client.get(f"/gallery/{item_id}/image")
    assert response.status_code == 404 and "no stored crop" in response.json()["detail"]
    assert _crops(settings) == []


def test_ingesting_again_fills_in_a_missing_crop(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    data = image_bytes(3)
    off = make_client(settings.model_copy(update={"store_crops": False}))
    [item_id] = upload(off, [data])
    on = make_client(settings)
    assert on.get(f"/gallery/{item_id}/image").status_code == 404
    assert upload(on, [data]) == [item_id]  # a duplicate: same id, and now its crop is kept
    assert on.get(f"/gallery/{item_id}/image").content == data
