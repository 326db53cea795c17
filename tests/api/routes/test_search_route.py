"""POST /search: ordering, k, modality routing, filters, and every kind of bad input."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from api_testkit import FakeEmbedder, image_bytes, noise_image, search, upload
from fastapi.testclient import TestClient
from PIL import Image

from vireid.api import Settings
from vireid.index import NumpyGalleryIndex


def _gallery(client: TestClient, n: int = 8, **fields: str) -> tuple[list[bytes], list[int]]:
    images = [image_bytes(seed) for seed in range(n)]
    return images, upload(client, images, **fields)


def test_search_finds_the_same_crop_first_in_descending_score(client: TestClient) -> None:
    images, ids = _gallery(client)
    body = search(client, images[3], modality="infrared", k=5)
    assert body["model"] == {"method": "fake", "version": "fake0001"}
    assert body["query_modality"] == "infrared"
    assert body["target_modality"] == "visible"
    scores = [m["score"] for m in body["matches"]]
    assert len(scores) == 5
    assert scores == sorted(scores, reverse=True)
    assert body["matches"][0]["id"] == ids[3]
    assert body["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert body["took_ms"] >= 0
    match = body["matches"][0]
    assert set(match) == {
        "id",
        "score",
        "camera",
        "modality",
        "captured_at",
        "track_id",
        "source",
        "track_matches",
    }
    assert match["track_matches"] is None
    assert (body["query_images"], body["group_by"], body["rerank"], body["candidates"]) == (
        1,
        "none",
        "none",
        5,
    )
    assert (match["camera"], match["modality"], match["source"]) == ("cam1", "visible", "img3.jpg")


def test_search_matches_numpy_reference(client: TestClient, embedder: FakeEmbedder) -> None:
    images, ids = _gallery(client, n=12)
    vectors = embedder.embed([Image.open(io.BytesIO(b)) for b in images], "visible")
    reference = NumpyGalleryIndex(vectors.shape[1])
    reference.add(np.asarray(ids, dtype=np.int64), vectors)
    query = image_bytes(99)
    ref_scores, ref_ids = reference.search(embedder.embed([Image.open(io.BytesIO(query))], "infrared"), 7)
    body = search(client, query, k=7)
    assert [m["id"] for m in body["matches"]] == ref_ids[0].tolist()
    np.testing.assert_allclose([m["score"] for m in body["matches"]], ref_scores[0], atol=1e-5)


def test_k_larger_than_gallery_returns_all(client: TestClient) -> None:
    _gallery(client, n=3)
    assert len(search(client, image_bytes(50), k=1000)["matches"]) == 3
    assert len(search(client, image_bytes(50), k=1)["matches"]) == 1


def test_default_searches_other_modality_and_target_override(client: TestClient) -> None:
    vis = upload(client, [image_bytes(1)], modality="visible")
    ir = upload(client, [image_bytes(2)], modality="infrared", camera="cam3")
    assert [m["id"] for m in search(client, image_bytes(1))["matches"]] == vis
    assert [m["id"] for m in search(client, image_bytes(1), modality="visible")["matches"]] == ir
    same = search(client, image_bytes(1), modality="visible", target_modality="visible")
    assert [m["id"] for m in same["matches"]] == vis


def test_empty_gallery_gives_no_matches(client: TestClient) -> None:
    assert search(client, image_bytes(1))["matches"] == []


def test_camera_filter_is_applied_inside_the_search(client: TestClient) -> None:
    a = upload(client, [image_bytes(s) for s in range(6)], camera="camA")
    b = upload(client, [image_bytes(s) for s in range(100, 104)], camera="camB")
    # Query = a camA crop: unfiltered, camA dominates the top; filtered, k camB results still come back.
    body = search(client, image_bytes(0), k=4, cameras="camB")
    assert sorted(m["id"] for m in body["matches"]) == sorted(b)
    assert {m["camera"] for m in body["matches"]} == {"camB"}
    both = search(client, image_bytes(0), k=10, cameras="camA, camB")
    assert len(both["matches"]) == 10 and both["matches"][0]["id"] == a[0]
    assert search(client, image_bytes(0), cameras="nope")["matches"] == []


def test_time_filters(client: TestClient) -> None:
    early = upload(client, [image_bytes(1)], captured_at="2024-01-01T08:00:00Z")
    late = upload(client, [image_bytes(2)], captured_at="2024-01-02T08:00:00+00:00")
    undated = upload(client, [image_bytes(3)])
    ids = lambda body: sorted(m["id"] for m in body["matches"])  # noqa: E731
    assert ids(search(client, image_bytes(1), k=10)) == sorted(early + late + undated)
    assert ids(search(client, image_bytes(1), since="2024-01-02T00:00:00Z")) == late
    assert ids(search(client, image_bytes(1), until="2024-01-02T00:00:00")) == early  # naive = UTC
    window = search(client, image_bytes(1), since="2024-01-01T00:00:00Z", until="2024-01-03T00:00:00Z")
    assert ids(window) == sorted(early + late)
    body = search(client, image_bytes(1), since="2024-01-01T07:00:00-02:00")  # = 09:00 UTC
    assert ids(body) == late
    assert body["matches"][0]["captured_at"].startswith("2024-01-02T08:00:00")


@pytest.mark.parametrize(
    "fields",
    [
        {"modality": "thermal"},
        {"target_modality": "rgb"},
        {"k": "0"},
        {"k": "1001"},
        {"k": "ten"},
        {"since": "yesterday"},
        {"since": "2024-01-02T00:00:00Z", "until": "2024-01-01T00:00:00Z"},
        {"cameras": " , "},
    ],
)
def test_bad_parameters_are_422(client: TestClient, fields: dict[str, str]) -> None:
    upload(client, [image_bytes(1)])
    response = client.post("/search", files={"image": ("q.jpg", image_bytes(1), "image/jpeg")}, data=fields)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], str)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height pixels, with a tiny (invalid) data stream."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    noise_image(1).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        pytest.param(b"", 422, id="empty"),
        pytest.param(image_bytes(1)[:200], 422, id="truncated-jpeg"),
        pytest.param(b"name,camera\nnot,an image\n", 422, id="text-file"),
        pytest.param(_png_header_only(20000, 20000), 422, id="20000x20000-bomb"),
        pytest.param(_encoded("GIF"), 415, id="gif"),
        pytest.param(_encoded("TIFF"), 415, id="tiff"),
    ],
)
def test_bad_images_are_refused_and_service_keeps_answering(
    client: TestClient, payload: bytes, status: int
) -> None:
    upload(client, [image_bytes(1)])
    response = client.post("/search", files={"image": ("q.bin", payload, "application/octet-stream")})
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    assert len(search(client, image_bytes(1))["matches"]) == 1
    assert client.get("/readyz").status_code == 200


def test_png_and_bmp_queries_work(client: TestClient) -> None:
    ids = upload(client, [image_bytes(5)])
    for fmt in ("PNG", "BMP"):
        assert search(client, image_bytes(5, fmt=fmt))["matches"][0]["id"] == ids[0]


def test_missing_image_field_is_422(client: TestClient) -> None:
    response = client.post("/search", data={"k": "3"})
    assert response.status_code == 422
    assert "image" in response.json()["detail"]


def test_upload_over_limit_is_413(client: TestClient, settings: Settings) -> None:
    big = image_bytes(1, fmt="BMP", size=(400, 400))  # 480 kB > 256 KiB limit of the fixture
    assert len(big) > settings.max_upload_bytes
    response = client.post("/search", files={"image": ("big.bmp", big, "image/bmp")})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_nprobe_and_ef_search_tune_one_search(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    """An IVF gallery probed by one list by default; `nprobe` widens one search to every list, which
    makes it exact. Out-of-range values are 422; `ef_search` means nothing to IVF-Flat and changes nothing."""
    settings = settings.model_copy(update={"index_factory": "IDMap2,IVF4,Flat", "index_nprobe": 1})
    client = make_client(settings)
    images = [image_bytes(seed) for seed in range(200)]
    ids: list[int] = []
    for start in range(0, 200, 50):
        ids += upload(client, images[start : start + 50])
    client.app.state.context.store.stop_builds(finish=True)  # type: ignore[attr-defined]
    assert client.app.state.context.index("visible").built_factory == "IDMap2,IVF4,Flat"  # type: ignore[attr-defined]
    embedder = FakeEmbedder()
    gallery = embedder.embed([Image.open(io.BytesIO(data)) for data in images], "visible")
    reference = NumpyGalleryIndex(gallery.shape[1])
    reference.add(ids, gallery)
    differ = 0
    for seed in range(1000, 1020):
        query = image_bytes(seed)
        exact = reference.search(embedder.embed([Image.open(io.BytesIO(query))], "infrared"), 10)[1][
            0
        ].tolist()
        wide = search(client, query, k=10, nprobe=4, ef_search=8)
        assert [m["id"] for m in wide["matches"]] == exact
        narrow = search(client, query, k=10)
        assert len(narrow["matches"]) == 10
        differ += [m["id"] for m in narrow["matches"]] != exact
    assert differ > 0  # one list of four does not always hold the ten best
    for name, value in (("nprobe", 0), ("nprobe", 65537), ("ef_search", -1)):
        response = client.post(
            "/search", files={"image": ("q.jpg", images[0], "image/jpeg")}, data={name: str(value)}
        )
        assert response.status_code == 422 and name in response.text
