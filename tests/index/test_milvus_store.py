"""MilvusIndexStore on Milvus Lite: the unit of work (stage, commit, save), SQL checks and repairs,
schema rebuilds, filters inside Milvus against SQL, and dropping a version."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")

from vireid.index import (
    GalleryRepository,
    MilvusGalleryIndex,
    MilvusIndexStore,
    NewItem,
    NumpyGalleryIndex,
    make_sessionmaker,
    milvus_connect,
)

DIM = 16
MV = "0123456789abcdef"
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
REPO = GalleryRepository()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Milvus Lite server for the module; each test uses its own collection prefix."""
    milvus = milvus_connect(str(tmp_path_factory.mktemp("milvus") / "lite.db"))
    yield milvus
    milvus.close()


@pytest.fixture
def store(client: Any, engine: Engine) -> MilvusIndexStore:
    return MilvusIndexStore(
        "unused.db", sessions=make_sessionmaker(engine), client=client, prefix=f"t{uuid.uuid4().hex[:10]}"
    )


def _vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _items(n: int, *, start: int = 0, modality: str = "visible") -> list[NewItem]:
    return [
        NewItem(
            camera=f"cam{i % 3}",
            modality=modality,
            sha256=hashlib.sha256(f"item{i}".encode()).hexdigest(),
            captured_at=None if i % 5 == 0 else T0 + timedelta(seconds=i, microseconds=7),
        )
        for i in range(start, start + n)
    ]


def _add_rows(session: Session, vectors: np.ndarray, *, start: int = 0) -> np.ndarray:
    ids = REPO.add_items(
        session=session, items=_items(len(vectors), start=start), vectors=vectors, model_version=MV
    )
    return np.asarray(ids, dtype=np.int64)


def test_unit_of_work_stage_commit_save(store: MilvusIndexStore, session: Session) -> None:
    index = store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=REPO)
    vectors = _vectors(12, seed=1)
    ids = _add_rows(session, vectors)
    index.add(ids, vectors)
    assert index.dirty and len(index) == 0  # staged: not in Milvus before the commit
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[:1], vectors[:1])
    session.commit()
    assert store.save_all() == [store.collection(MV, "visible")]
    assert not index.dirty and len(index) == 12
    np.testing.assert_array_equal(index.ids(), np.sort(ids))
    _, got = index.search(vectors[3:4], 1)
    assert got[0, 0] == ids[3]


def test_rolled_back_rows_never_reach_milvus(
    store: MilvusIndexStore, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    index = store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=REPO)
    vectors = _vectors(4, seed=2)
    ids = _add_rows(session, vectors)
    index.add(ids, vectors)
    assert index.remove(ids[:2]) == 2  # the service's undo after a failed commit
    session.rollback()
    with caplog.at_level(logging.WARNING):
        store.save(MV, "visible")  # the two still staged are not in SQL: dropped, logged
    assert "not in SQL" in caplog.text
    assert len(index) == 0 and not index.dirty


def test_filters_in_milvus_match_sql(store: MilvusIndexStore, session: Session) -> None:
    index = store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=REPO)
    vectors = _vectors(30, seed=3)
    ids = _add_rows(session, vectors)
    index.add(ids, vectors)
    session.commit()
    store.save(MV, "visible")
    query = _vectors(1, seed=4)
    since, until = T0 + timedelta(seconds=4, microseconds=7), T0 + timedelta(seconds=20, microseconds=7)
    for cameras, lo, hi in [(["cam1"], None, None), (["cam0", "cam2"], since, None), (None, since, until)]:
        allowed = REPO.matching_ids(
            session=session, model_version=MV, modality="visible", cameras=cameras, since=lo, until=hi
        )
        k = int(allowed.size)
        got = index.search_filtered(query, k, cameras=cameras, since=lo, until=hi)
        want = index.search(query, k, allowed_ids=allowed)
        np.testing.assert_array_equal(got[1], want[1])
        assert (got[1] >= 0).sum() == k
        assert set(got[1][0].tolist()) == set(allowed.tolist())


def test_start_up_repairs_a_tampered_collection(
    store: MilvusIndexStore, client: Any, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    vectors = _vectors(20, seed=5)
    ids = _add_rows(session, vectors)
    session.commit()
    index = store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=REPO)
    np.testing.assert_array_equal(index.ids(), ids)  # built from SQL
    name = store.collection(MV, "visible")
    client.delete(name, ids=ids[:5].tolist())
    raw = MilvusGalleryIndex(client, name, dim=DIM)
    raw.add([10_000], _vectors(1, seed=6), cameras=["intruder"], captured_at=[None])
    with caplog.at_level(logging.WARNING):
        again = MilvusIndexStore("unused.db", sessions=store._sessions, client=client, prefix=store._prefix)
        repaired = again.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=REPO)
    assert "deleting 1 ids SQL lacks, adding 5" in caplog.text
    np.testing.assert_array_equal(repaired.ids(), ids)
    reference = NumpyGalleryIndex(DIM)
    reference.add(ids, vectors)
    got_scores, got_ids = repaired.search(vectors[:3], 5)
    want_scores, want_ids = reference.search(vectors[:3], 5)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)
    _, found = repaired.search_filtered(vectors[:1], 20, cameras=["cam1"], since=None, until=None)
    assert set(found[0][found[0] >= 0].tolist()) == {int(ids[i]) for i in range(20) if i % 3 == 1}


def test_collection_of_another_width_is_rebuilt(
    store: MilvusIndexStore, client: Any, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _add_rows(session, _vectors(6, seed=7))
    session.commit()
    MilvusGalleryIndex(client, store.collection(MV, "visible"), dim=DIM + 1)
    with pytest.raises(Exception, match="dim"):
        store.get(MV, "visible", dim=DIM)
    with caplog.at_level(logging.WARNING):
        index = store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=REPO)
    assert "rebuilding Milvus collection" in caplog.text
    assert index.dim == DIM
    np.testing.assert_array_equal(index.ids(), ids)
    with pytest.raises(ValueError, match="dim"):
        store.get(MV, "visible", dim=DIM * 2)


def test_remove_files_drops_the_versions_collections(
    store: MilvusIndexStore, client: Any, session: Session
) -> None:
    for modality in ("visible", "infrared"):
        store.load_or_rebuild(MV, modality, dim=DIM, session=session, repository=REPO)
    fresh = MilvusIndexStore("unused.db", sessions=store._sessions, client=client, prefix=store._prefix)
    found = fresh.loaded_index(MV, "infrared")  # opened although this store never touched it
    assert found is not None and found.dim == DIM
    assert fresh.loaded_index("other-version", "infrared") is None
    store.remove_files(MV)
    assert not client.has_collection(store.collection(MV, "visible"))
    assert not client.has_collection(store.collection(MV, "infrared"))
    assert store.loaded() == []
    assert store.reload_if_changed() == [] and store.remove_stale_temp_files() == []
