"""MilvusGalleryIndex on Milvus Lite: the GalleryIndex ordering (ties, padding) against the numpy
reference, filters inside Milvus, add/remove checks and schema checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

from vireid.index import (
    CorruptIndexError,
    MetadataFilter,
    MilvusGalleryIndex,
    NumpyGalleryIndex,
    check_milvus_uri,
    milvus_collection_name,
    milvus_connect,
)

DIM = 8
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Milvus Lite server for the module (its start-up costs about half a second)."""
    uri = str(tmp_path_factory.mktemp("milvus") / "lite.db")
    milvus = milvus_connect(uri)
    yield milvus
    milvus.close()


@pytest.fixture
def name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact(n: int, seed: int) -> np.ndarray:
    """Unit vectors of four +-0.5 entries: every inner product is a multiple of 0.25, computed exactly
    in any summation order, so many scores tie exactly (BLAS gives equal rows of a float matrix
    slightly different products depending on their position; these do not)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, DIM), np.float32)
    for row in out:
        row[rng.choice(DIM, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return out


def _filled(client: Any, name: str, vectors: np.ndarray, ids: np.ndarray) -> MilvusGalleryIndex:
    index = MilvusGalleryIndex(client, name, dim=DIM)
    cameras = [f"cam{i % 3}" for i in range(len(ids))]
    times = [None if i % 4 == 0 else T0 + timedelta(minutes=int(i)) for i in range(len(ids))]
    index.add(ids, vectors, cameras=cameras, captured_at=times)
    return index


def test_collection_names_are_valid_and_distinct() -> None:
    a = milvus_collection_name("v1.0-rc", "visible")
    b = milvus_collection_name("v1_0_rc", "visible")
    assert a.startswith("vireid_visible_v1_0_rc_") and a != b
    assert milvus_collection_name("v1.0-rc", "infrared") != a
    assert all(c.isalnum() or c == "_" for c in a)
    assert len(milvus_collection_name("a" * 128, "infrared", prefix="p" * 64)) <= 255
    with pytest.raises(ValueError, match="prefix"):
        milvus_collection_name("v1", "visible", prefix="1bad")
    with pytest.raises(ValueError, match="modality"):
        milvus_collection_name("v1", "thermal")


def test_uri_checks() -> None:
    assert check_milvus_uri("http://milvus:19530") == "http://milvus:19530"
    assert check_milvus_uri("/data/milvus.db") == "/data/milvus.db"
    with pytest.raises(ValueError, match=r"\.db"):
        check_milvus_uri("/data/milvus")


def test_search_matches_numpy_reference_with_ties_and_padding(client: Any, name: str) -> None:
    vectors = _exact(60, seed=1)  # 60 vectors among 1120 possible: exact ties everywhere
    ids = np.arange(100, 160, dtype=np.int64)[::-1].copy()  # inserted in descending id order
    index = _filled(client, name, vectors, ids)
    reference = NumpyGalleryIndex(DIM)
    reference.add(ids, vectors)
    queries = np.concatenate([vectors[:5], _exact(3, seed=2)])
    for k in (1, 2, 7, 20):
        got_scores, got_ids = index.search(queries, k)
        want_scores, want_ids = reference.search(queries, k)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_array_equal(got_scores, want_scores)
        assert got_scores.dtype == np.float32 and got_ids.dtype == np.int64
    scores, found = index.search(queries[:1], 70)  # more than the 60 stored
    assert (found[0, 60:] == -1).all() and np.isneginf(scores[0, 60:]).all()
    assert sorted(found[0, :60].tolist()) == sorted(ids.tolist())
    assert len(index) == 60
    np.testing.assert_array_equal(index.ids(), np.sort(ids))


def test_long_tie_groups_are_fetched_whole(client: Any, name: str) -> None:
    """30 equal vectors: the tie at the cut-off runs past k + margin, so the search fetches more."""
    same = np.repeat(_exact(1, seed=11), 30, axis=0)
    ids = np.arange(500, 530, dtype=np.int64)[::-1].copy()
    index = _filled(client, name, same, ids)
    scores, got = index.search(same[:1], 3)
    assert got[0].tolist() == [500, 501, 502]
    assert scores[0].tolist() == [1.0, 1.0, 1.0]


def test_filters_run_in_milvus_and_return_k_when_k_pass(client: Any, name: str) -> None:
    n = 40
    vectors = _vectors(n, seed=3)
    ids = np.arange(1, n + 1, dtype=np.int64)
    index = _filled(client, name, vectors, ids)
    cameras = np.array([f"cam{i % 3}" for i in range(n)])
    minutes = np.array([-1 if i % 4 == 0 else i for i in range(n)])
    query = _vectors(1, seed=4)
    since, until = T0 + timedelta(minutes=5), T0 + timedelta(minutes=31)
    cases = [
        (MetadataFilter(cameras=["cam1"]), cameras == "cam1"),
        (
            MetadataFilter(cameras=["cam0", "cam2"], since=since),
            np.isin(cameras, ["cam0", "cam2"]) & (minutes >= 5),
        ),
        (MetadataFilter(until=until), (minutes >= 0) & (minutes < 31)),
        (MetadataFilter(since=since, until=until), (minutes >= 5) & (minutes < 31)),
    ]
    for where, passing in cases:
        reference = NumpyGalleryIndex(DIM)
        reference.add(ids[passing], vectors[passing])
        k = int(passing.sum()) - 1
        got_scores, got_ids = index.search(query, k, where=where)
        want_scores, want_ids = reference.search(query, k)
        assert (got_ids >= 0).sum() == k  # k of them pass: k come back
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)
    # allowed ids combine with a filter; an empty allowed set gives padding only
    _, got = index.search(query, 5, allowed_ids=[2, 3, 5, 8], where=MetadataFilter(cameras=["cam1"]))
    assert set(got[0, :3].tolist()) == {2, 5, 8} and got[0, 3:].tolist() == [-1, -1]  # 3 and cam2
    _, got = index.search(query, 3, allowed_ids=[])
    assert (got == -1).all()


def test_camera_names_are_escaped_in_the_expression(client: Any, name: str) -> None:
    index = MilvusGalleryIndex(client, name, dim=DIM)
    odd = ['gate "A"', "back\\slash", "plain"]
    index.add([1, 2, 3], _vectors(3, seed=5), cameras=odd, captured_at=[None] * 3)
    for i, camera in enumerate(odd, start=1):
        _, got = index.search(_vectors(1, seed=6), 3, where=MetadataFilter(cameras=[camera]))
        assert got[0].tolist() == [i, -1, -1]


def test_add_is_checked_and_all_or_nothing(client: Any, name: str) -> None:
    index = _filled(client, name, _vectors(4, seed=7), np.arange(4, dtype=np.int64))
    one = {"cameras": ["c"], "captured_at": [None]}
    with pytest.raises(ValueError, match="already in the index"):
        index.add([3], _vectors(1, seed=8), **one)
    with pytest.raises(ValueError, match="repeated"):
        index.add([9, 9], _vectors(2, seed=8), cameras=["c", "c"], captured_at=[None, None])
    with pytest.raises(ValueError):
        index.add([9], np.ones((1, DIM + 1), np.float32), **one)
    with pytest.raises(ValueError):
        index.add([9], np.full((1, DIM), np.nan, np.float32), **one)
    with pytest.raises(ValueError, match="camera"):
        index.add([9], _vectors(1, seed=8), cameras=["x" * 65], captured_at=[None])
    with pytest.raises(ValueError, match="timezone-aware"):
        index.add([9], _vectors(1, seed=8), cameras=["c"], captured_at=[datetime(2026, 1, 1)])
    with pytest.raises(ValueError):
        index.search(_vectors(1, seed=8)[:, :3], 1)
    assert len(index) == 4


def test_remove_counts_only_present_ids(client: Any, name: str) -> None:
    vectors = _vectors(6, seed=9)
    index = _filled(client, name, vectors, np.arange(10, 16, dtype=np.int64))
    assert index.remove([10, 12, 999]) == 2
    assert index.remove([]) == 0
    np.testing.assert_array_equal(index.ids(), [11, 13, 14, 15])
    _, got = index.search(vectors[0:1], 6)
    assert 10 not in got[0] and 12 not in got[0]


def test_schema_mismatch_is_refused(client: Any, name: str) -> None:
    MilvusGalleryIndex(client, name, dim=DIM)
    with pytest.raises(CorruptIndexError, match="dim"):
        MilvusGalleryIndex(client, name, dim=DIM * 2)
    with pytest.raises(CorruptIndexError, match="HNSW"):
        MilvusGalleryIndex(client, name, dim=DIM, index_type="HNSW")


def test_missing_pymilvus_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(ImportError, match=r"vireid\[milvus\]"):
        milvus_connect(str(tmp_path / "x.db"))


def test_a_lite_file_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom vireid.index import milvus_connect\n"
            f"milvus_connect({str(path)!r}).list_collections()\nprint('ready', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(RuntimeError, match="one process at a time"):
            milvus_connect(str(path))
    finally:
        holder.kill()
        holder.wait()
