"""/gallery: add (with duplicates and all-or-nothing), get, delete, stats, API key."""

from __future__ import annotations

import pytest
from api_testkit import image_bytes, search, upload
from fastapi.testclient import TestClient

from vireid.api import Settings


def test_add_returns_ids_in_upload_order_and_get_returns_metadata(client: TestClient) -> None:
    ids = upload(
        client,
        [image_bytes(1), image_bytes(2)],
        camera="door-3",
        modality="infrared",
        captured_at="2024-05-01T12:30:00+02:00",
        track_id="t-17",
    )
    assert len(ids) == 2 and ids[0] < ids[1]
    item = client.get(f"/gallery/{ids[1]}").json()
    assert item["id"] == ids[1]
    assert (item["camera"], item["modality"], item["track_id"]) == ("door-3", "infrared", "t-17")
    assert item["captured_at"].startswith("2024-05-01T10:30:00")  # stored in UTC
    assert item["source"] == "img1.jpg"
    assert item["model_version"] == "fake0001"
    assert len(item["sha256"]) == 64


def test_explicit_source_is_used(client: TestClient) -> None:
    [item_id] = upload(client, [image_bytes(1)], source="nvr-7/2024-05-01.mp4")
    assert client.get(f"/gallery/{item_id}").json()["source"] == "nvr-7/2024-05-01.mp4"


def test_duplicate_image_returns_existing_id(client: TestClient) -> None:
    [first] = upload(client, [image_bytes(1)], camera="cam1")
    response = client.post(
        "/gallery",
        files=[
            ("images", ("a.jpg", image_bytes(1), "image/jpeg")),
            ("images", ("b.jpg", image_bytes(2), "image/jpeg")),
        ],
        data={"camera": "cam9", "modality": "visible"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["ids"][0] == first and body["added"] == 1 and body["duplicates"] == 1
    assert client.get(f"/gallery/{first}").json()["camera"] == "cam1"  # metadata unchanged
    # same bytes twice in one request: one item
    again = upload(client, [image_bytes(3), image_bytes(3)])
    assert again[0] == again[1]
    # same bytes in the other modality: a separate item
    [other] = upload(client, [image_bytes(1)], modality="infrared")
    assert other != first
    assert client.get("/gallery/stats").json()["total"] == 4


def test_one_bad_image_refuses_the_whole_request(client: TestClient) -> None:
    files = [
        ("images", ("good.jpg", image_bytes(1), "image/jpeg")),
        ("images", ("bad.jpg", image_bytes(2)[:100], "image/jpeg")),
    ]
    response = client.post("/gallery", files=files, data={"camera": "c", "modality": "visible"})
    assert response.status_code == 422
    assert "bad.jpg" in response.json()["detail"]
    assert client.get("/gallery/stats").json()["total"] == 0
    assert search(client, image_bytes(1))["matches"] == []


@pytest.mark.parametrize(
    "data",
    [
        {"camera": "c", "modality": "ultraviolet"},
        {"camera": "", "modality": "visible"},
        {"modality": "visible"},
        {"camera": "c" * 65, "modality": "visible"},
        {"camera": "c", "modality": "visible", "captured_at": "not a date"},
    ],
)
def test_bad_metadata_is_422(client: TestClient, data: dict[str, str]) -> None:
    response = client.post("/gallery", files=[("images", ("a.jpg", image_bytes(1), "image/jpeg"))], data=data)
    assert response.status_code == 422, response.text


def test_no_images_is_422(client: TestClient) -> None:
    response = client.post("/gallery", data={"camera": "c", "modality": "visible"})
    assert response.status_code == 422


def test_gif_upload_is_415(client: TestClient) -> None:
    import io

    from api_testkit import noise_image

    buffer = io.BytesIO()
    noise_image(1).save(buffer, format="GIF")
    response = client.post(
        "/gallery",
        files=[("images", ("a.gif", buffer.getvalue(), "image/gif"))],
        data={"camera": "c", "modality": "visible"},
    )
    assert response.status_code == 415


def test_get_and_delete_unknown_id_are_404(client: TestClient) -> None:
    assert client.get("/gallery/12345").status_code == 404
    assert client.delete("/gallery/12345").status_code == 404
    assert client.get("/gallery/not-a-number").status_code == 422


def test_delete_removes_from_sql_and_index_and_saves(client: TestClient, settings: Settings) -> None:
    ids = upload(client, [image_bytes(1), image_bytes(2)])
    assert client.delete(f"/gallery/{ids[0]}").status_code == 204
    assert client.get(f"/gallery/{ids[0]}").status_code == 404
    assert [m["id"] for m in search(client, image_bytes(1), k=10)["matches"]] == [ids[1]]
    assert client.get("/gallery/stats").json()["total"] == 1
    assert client.delete(f"/gallery/{ids[0]}").status_code == 404
    manifest = settings.data_dir / "indexes" / "fake0001" / "visible.json"
    assert '"count": 1' in manifest.read_text()


def test_stats_counts_per_camera_and_modality(client: TestClient) -> None:
    upload(client, [image_bytes(s) for s in range(3)], camera="cam1")
    upload(client, [image_bytes(s) for s in range(3, 5)], camera="cam2")
    upload(client, [image_bytes(s) for s in range(5, 6)], camera="cam3", modality="infrared")
    stats = client.get("/gallery/stats").json()
    assert stats["model_version"] == "fake0001"
    assert stats["total"] == 6
    assert stats["by_modality"] == {"visible": 5, "infrared": 1}
    assert stats["by_camera"] == [
        {"camera": "cam1", "modality": "visible", "count": 3},
        {"camera": "cam2", "modality": "visible", "count": 2},
        {"camera": "cam3", "modality": "infrared", "count": 1},
    ]


def test_empty_stats(client: TestClient) -> None:
    stats = client.get("/gallery/stats").json()
    assert stats["total"] == 0 and stats["by_modality"] == {"visible": 0, "infrared": 0}


def test_too_many_files_is_422(make_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = make_client(Settings(data_dir=tmp_path / "d", max_files_per_request=2))
    files = [("images", (f"{n}.jpg", image_bytes(n), "image/jpeg")) for n in range(3)]
    response = client.post("/gallery", files=files, data={"camera": "c", "modality": "visible"})
    assert response.status_code == 422 and "at most 2" in response.json()["detail"]


class TestApiKey:
    @pytest.fixture
    def keyed(self, make_client, tmp_path) -> TestClient:  # type: ignore[no-untyped-def]
        return make_client(Settings(data_dir=tmp_path / "d", api_key="s3cret"))

    def test_mutating_routes_need_the_key(self, keyed: TestClient) -> None:
        files = [("images", ("a.jpg", image_bytes(1), "image/jpeg"))]
        form = {"camera": "c", "modality": "visible"}
        assert keyed.post("/gallery", files=files, data=form).status_code == 401
        wrong = keyed.post("/gallery", files=files, data=form, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"]
        [item_id] = upload(keyed, [image_bytes(1)], headers={"X-API-Key": "s3cret"})
        assert keyed.delete(f"/gallery/{item_id}").status_code == 401
        assert keyed.delete(f"/gallery/{item_id}", headers={"X-API-Key": "s3cret"}).status_code == 204

    def test_read_routes_do_not_need_the_key(self, keyed: TestClient) -> None:
        assert keyed.get("/gallery/stats").status_code == 200
        assert (
            keyed.post("/search", files={"image": ("q.jpg", image_bytes(1), "image/jpeg")}).status_code == 200
        )
        assert keyed.get("/healthz").status_code == 200

    def test_env_key_is_used(self, make_client, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        monkeypatch.setenv("VIREID_API_KEY", "from-env")
        client = make_client(Settings(data_dir=tmp_path / "e"))
        files = [("images", ("a.jpg", image_bytes(1), "image/jpeg"))]
        form = {"camera": "c", "modality": "visible"}
        assert client.post("/gallery", files=files, data=form).status_code == 401
        ok = client.post("/gallery", files=files, data=form, headers={"X-API-Key": "from-env"})
        assert ok.status_code == 201


def test_source_is_hidden_unless_the_operator_asks_for_it(
    make_client,
    settings: Settings,  # type: ignore[no-untyped-def]
) -> None:
    hidden = make_client(settings.model_copy(update={"return_source": False}))
    [item_id] = upload(hidden, [image_bytes(1)], source="/srv/cams/c1/0001.jpg")
    assert hidden.get(f"/gallery/{item_id}").json()["source"] is None
    assert search(hidden, image_bytes(1), k=1)["matches"][0]["source"] is None
    assert Settings().return_source is False  # the default
