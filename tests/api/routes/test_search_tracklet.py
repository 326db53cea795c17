"""POST /search with several images (one tracklet), group_by=track and rerank=cmfp (issue #14, items 5-6)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from api_testkit import THUMB, FakeEmbedder, encode, image_bytes, upload
from fastapi.testclient import TestClient
from PIL import Image

from vireid.api import Settings
from vireid.api.services import cmfp_rerank, fuse_tracklet
from vireid.index import NumpyGalleryIndex


def _post(client: TestClient, images: list[bytes], **fields: str | int) -> dict:
    files = [("image", (f"q{n}.jpg", data, "image/jpeg")) for n, data in enumerate(images)]
    response = client.post("/search", files=files, data={k: str(v) for k, v in fields.items()})
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


def _vectors(embedder: FakeEmbedder, images: list[bytes]) -> np.ndarray:
    """Each image embedded on its own (one embed call per image)."""
    return np.concatenate([embedder.embed([Image.open(io.BytesIO(b))], "infrared") for b in images])


def _variant(seed: int, shift: int) -> bytes:
    """Image ``seed`` with every block's colour moved by ``shift``: another file, almost the same vector."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(20, 236, size=(THUMB[1], THUMB[0], 3), dtype=np.int16) + shift
    image = Image.fromarray(blocks.clip(0, 255).astype(np.uint8)).resize((16, 32), Image.Resampling.NEAREST)
    return encode(image, "PNG")


def test_three_image_tracklet_answers_k_matches_of_the_fused_vector(
    client: TestClient, embedder: FakeEmbedder
) -> None:
    gallery = [image_bytes(seed) for seed in range(12)]
    ids = upload(client, gallery)
    tracklet = [image_bytes(1), image_bytes(40), image_bytes(41)]
    embedder.calls.clear()
    body = _post(client, tracklet, k=5)
    assert body["query_images"] == 3 and len(body["matches"]) == 5
    assert embedder.calls == [(3, "infrared")]  # the three crops in one embed call
    # The fused query is norm(mean(norm(v_i))) of the crops embedded one by one.
    each = _vectors(embedder, tracklet)
    mean = each.mean(axis=0)
    fused = mean / np.linalg.norm(mean)
    np.testing.assert_allclose(fuse_tracklet(each), fused, atol=1e-6)
    reference = NumpyGalleryIndex(fused.size)
    reference.add(np.asarray(ids, dtype=np.int64), _vectors(embedder, gallery))
    ref_scores, ref_ids = reference.search(fused[None, :].astype(np.float32), 5)
    assert [m["id"] for m in body["matches"]] == ref_ids[0].tolist()
    np.testing.assert_allclose([m["score"] for m in body["matches"]], ref_scores[0], atol=1e-5)
    # A single image is not "fused": it is searched exactly as before.
    one = _post(client, [image_bytes(1)], k=1)
    assert one["query_images"] == 1 and one["matches"][0]["id"] == ids[1]
    assert one["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_tracklet_decoded_in_chunks_under_a_small_decode_budget(
    make_client: Callable[..., TestClient], tmp_path: Path, embedder: FakeEmbedder
) -> None:
    # 16x32 crops are 512 px; a 1024 px decode budget holds two of them at a time.
    small = Settings(data_dir=tmp_path / "d", max_image_pixels=1024, max_decode_pixels=1024)
    client = make_client(small)
    upload(client, [image_bytes(seed) for seed in range(6)])
    tracklet = [image_bytes(2), image_bytes(3), image_bytes(50)]
    embedder.calls.clear()
    body = _post(client, tracklet, k=3)
    assert [n for n, _ in embedder.calls] == [2, 1] and body["query_images"] == 3
    fused = fuse_tracklet(_vectors(embedder, tracklet))
    expected = _vectors(embedder, [image_bytes(seed) for seed in range(6)]) @ fused
    np.testing.assert_allclose([m["score"] for m in body["matches"]], np.sort(expected)[::-1][:3], atol=1e-5)


def test_too_many_images_is_422(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = make_client(Settings(data_dir=tmp_path / "d", max_query_images=3))
    upload(client, [image_bytes(1)])
    files = [("image", (f"q{n}.jpg", image_bytes(n), "image/jpeg")) for n in range(4)]
    response = client.post("/search", files=files)
    assert response.status_code == 422
    assert response.json()["detail"] == "at most 3 query images per search, got 4"
    assert _post(client, [image_bytes(n) for n in range(3)])["query_images"] == 3


@pytest.mark.parametrize(
    ("bad", "status"), [(b"\xff\xd8\xff broken", 422), (b"", 422), (image_bytes(1, fmt="GIF"), 415)]
)
def test_a_bad_image_among_several_is_refused_by_name(client: TestClient, bad: bytes, status: int) -> None:
    upload(client, [image_bytes(1)])
    files = [
        ("image", ("good-1.jpg", image_bytes(1), "image/jpeg")),
        ("image", ("broken-frame.jpg", bad, "image/jpeg")),
        ("image", ("good-2.jpg", image_bytes(2), "image/jpeg")),
    ]
    response = client.post("/search", files=files)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith("broken-frame.jpg: ")


def test_tracklet_pixels_count_together_against_the_request_limit(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(Settings(data_dir=tmp_path / "d", max_request_pixels=1200))
    upload(client, [image_bytes(1)])
    assert _post(client, [image_bytes(1), image_bytes(2)])["query_images"] == 2  # 1024 px
    files = [("image", (f"q{n}.jpg", image_bytes(n), "image/jpeg")) for n in range(3)]  # 1536 px
    response = client.post("/search", files=files)
    assert response.status_code == 413 and "1536 pixels" in response.json()["detail"]


def _tracked_gallery(client: TestClient) -> dict[str, list[int]]:
    """Track A: ten near copies of the query (they fill the top); B: three crops; four crops untracked."""
    return {
        "A": upload(client, [_variant(0, shift) for shift in range(0, 20, 2)], track_id="A"),
        "B": upload(client, [_variant(7, shift) for shift in range(3)], track_id="B"),
        "none": upload(client, [_variant(seed, 0) for seed in (11, 12, 13, 14)]),
    }


def test_group_by_track_gives_k_groups_one_match_each(client: TestClient) -> None:
    groups = _tracked_gallery(client)
    plain = _post(client, [_variant(0, 1)], k=3)
    assert {m["id"] for m in plain["matches"]} <= set(groups["A"])  # ungrouped, A fills the top 3
    body = _post(client, [_variant(0, 1)], k=3, group_by="track")
    assert body["group_by"] == "track" and len(body["matches"]) == 3
    first = body["matches"][0]
    assert first["track_id"] == "A" and first["id"] == plain["matches"][0]["id"]
    assert first["score"] == pytest.approx(plain["matches"][0]["score"], abs=1e-6)
    assert first["track_matches"] == 10  # all of A was among the candidates needed for 3 groups
    assert body["candidates"] > 10
    keys = [m["track_id"] or m["id"] for m in body["matches"]]
    assert len(set(keys)) == 3
    scores = [m["score"] for m in body["matches"]]
    assert scores == sorted(scores, reverse=True)
    # Every group when k exceeds their number: A, B and the four untracked crops standing alone.
    every = _post(client, [_variant(0, 1)], k=50, group_by="track")
    assert len(every["matches"]) == 6 and every["candidates"] == 17
    by_track = {m["track_id"]: m for m in every["matches"] if m["track_id"]}
    assert (by_track["A"]["track_matches"], by_track["B"]["track_matches"]) == (10, 3)
    alone = [m for m in every["matches"] if m["track_id"] is None]
    assert sorted(m["id"] for m in alone) == sorted(groups["none"])
    assert all(m["track_matches"] == 1 for m in alone)


def test_group_by_track_keeps_the_filters(client: TestClient) -> None:
    upload(client, [_variant(0, shift) for shift in range(0, 12, 2)], track_id="A", camera="c1")
    b = upload(client, [_variant(3, shift) for shift in range(3)], track_id="B", camera="c2")
    c = upload(client, [_variant(4, shift) for shift in range(3)], track_id="C", camera="c2")
    body = _post(client, [_variant(0, 1)], k=5, group_by="track", cameras="c2")
    assert {m["track_id"] for m in body["matches"]} == {"B", "C"}
    assert {m["id"] for m in body["matches"]} <= set(b + c)


def _reference_rerank(
    embedder: FakeEmbedder, gallery: list[bytes], ids: list[int], query: bytes, *, r: int, k: int
) -> tuple[list[int], list[float]]:
    vectors = _vectors(embedder, gallery)
    q = _vectors(embedder, [query])[0]
    top = np.argsort(-(vectors @ q), kind="stable")[:r]
    scores = cmfp_rerank(q, vectors[top], k=k)
    order = sorted(range(len(top)), key=lambda j: (-scores[j], ids[top[j]]))
    return [ids[top[j]] for j in order], [float(scores[j]) for j in order]


def test_rerank_cmfp_rescores_the_top_r_candidates(
    make_client: Callable[..., TestClient], tmp_path: Path, embedder: FakeEmbedder
) -> None:
    client = make_client(Settings(data_dir=tmp_path / "d", rerank_candidates=8, rerank_k=3))
    gallery = [image_bytes(seed) for seed in range(20)]
    ids = upload(client, gallery)
    body = _post(client, [image_bytes(30)], k=5, rerank="cmfp")
    assert body["rerank"] == "cmfp" and body["candidates"] == 8 and len(body["matches"]) == 5
    ref_ids, ref_scores = _reference_rerank(embedder, gallery, ids, image_bytes(30), r=8, k=3)
    assert [m["id"] for m in body["matches"]] == ref_ids[:5]
    np.testing.assert_allclose([m["score"] for m in body["matches"]], ref_scores[:5], atol=1e-5)
    plain = _post(client, [image_bytes(30)], k=5)
    assert plain["rerank"] == "none"
    assert [m["score"] for m in plain["matches"]] != [m["score"] for m in body["matches"]]
    # k above R re-ranks k candidates.
    assert _post(client, [image_bytes(30)], k=12, rerank="cmfp")["candidates"] == 12


def test_rerank_with_group_by_track_and_its_candidate_cap(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    capped = Settings(data_dir=tmp_path / "d", rerank_candidates=4, rerank_max_candidates=12)
    client = make_client(capped)
    _tracked_gallery(client)
    body = _post(client, [_variant(0, 1)], k=2, group_by="track", rerank="cmfp")
    assert (body["group_by"], body["rerank"]) == ("track", "cmfp")
    assert len(body["matches"]) == 2 and body["candidates"] == 12  # 4, 8, then the cap
    assert body["matches"][0]["track_id"] == "A"
    files = [("image", ("q.png", _variant(0, 1), "image/png"))]
    response = client.post("/search", files=files, data={"k": "6", "group_by": "track", "rerank": "cmfp"})
    assert response.status_code == 422
    assert "VIREID_RERANK_MAX_CANDIDATES" in response.json()["detail"]


@pytest.mark.parametrize("fields", [{"group_by": "camera"}, {"rerank": "kreciprocal"}])
def test_bad_group_by_or_rerank_is_422(client: TestClient, fields: dict[str, str]) -> None:
    response = client.post("/search", files={"image": ("q.jpg", image_bytes(1), "image/jpeg")}, data=fields)
    assert response.status_code == 422
