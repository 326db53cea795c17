"""GalleryRepository on SQLite and PostgreSQL (the same tests, parametrised by the `session` fixture)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vireid.index import DuplicateItemError, Embedding, GalleryRepository, NewItem

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=timezone.utc)


def _digest(i: int) -> str:
    return hashlib.sha256(f"image-{i}".encode()).hexdigest()


def _items(start: int, n: int, *, camera: str = "cam1", modality: str = "visible") -> list[NewItem]:
    return [
        NewItem(
            camera=camera,
            modality=modality,
            sha256=_digest(i),
            captured_at=T0 + timedelta(minutes=i),
            track_id=f"t{i % 3}",
            source=f"{camera}/{i:04d}.jpg",
        )
        for i in range(start, start + n)
    ]


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture
def repo() -> GalleryRepository:
    return GalleryRepository(in_chunk=4)  # small chunks exercise the multi-query paths


def test_add_get_and_persist(session: Session, repo: GalleryRepository) -> None:
    vectors = _vectors(5)
    ids = repo.add_items(session=session, items=_items(0, 5), vectors=vectors, model_version="v1")
    assert len(ids) == 5 and ids == sorted(ids) and len(set(ids)) == 5
    session.commit()
    session.expunge_all()
    item = repo.get(session=session, id=ids[2])
    assert item is not None
    assert (item.camera, item.modality, item.model_version, item.track_id) == ("cam1", "visible", "v1", "t2")
    assert item.sha256 == _digest(2) and item.source == "cam1/0002.jpg"
    assert item.captured_at == T0 + timedelta(minutes=2)
    assert item.embedding is not None and item.embedding.dim == 8
    np.testing.assert_array_equal(item.embedding.as_array(), vectors[2])
    assert repo.get(session=session, id=10**9) is None


def test_duplicates_are_refused_and_nothing_is_written(session: Session, repo: GalleryRepository) -> None:
    ids = repo.add_items(session=session, items=_items(0, 3), vectors=_vectors(3), model_version="v1")
    session.commit()
    with pytest.raises(DuplicateItemError, match="already in the gallery") as info:
        repo.add_items(session=session, items=_items(2, 3), vectors=_vectors(3), model_version="v1")
    assert info.value.sha256s == [_digest(2)]
    with pytest.raises(DuplicateItemError, match="repeated within the batch"):
        repo.add_items(session=session, items=_items(7, 1) * 2, vectors=_vectors(2), model_version="v1")
    assert repo.count(session=session, model_version="v1", modality="visible") == 3
    # The same image is new for another model version or modality.
    repo.add_items(session=session, items=_items(0, 1), vectors=_vectors(1), model_version="v2")
    repo.add_items(
        session=session, items=_items(0, 1, modality="infrared"), vectors=_vectors(1), model_version="v1"
    )
    session.commit()
    found = repo.find_existing_sha256(
        session=session, sha256s=[_digest(i) for i in range(6)], model_version="v1", modality="visible"
    )
    assert found == {_digest(0), _digest(1), _digest(2)}
    mapping = repo.find_existing(
        session=session, sha256s=[_digest(1), _digest(9)], model_version="v1", modality="visible"
    )
    assert mapping == {_digest(1): ids[1]}


def test_add_items_validates(session: Session, repo: GalleryRepository) -> None:
    with pytest.raises(ValueError, match=r"got 2 items for vectors of shape \(3, 8\)"):
        repo.add_items(session=session, items=_items(0, 2), vectors=_vectors(3), model_version="v1")
    with pytest.raises(ValueError, match="float32"):
        repo.add_items(
            session=session, items=_items(0, 2), vectors=_vectors(2).astype(float), model_version="v1"
        )
    with pytest.raises(ValueError, match="model_version"):
        repo.add_items(session=session, items=_items(0, 2), vectors=_vectors(2), model_version="../x")
    with pytest.raises(ValueError, match="modality"):
        NewItem(camera="c", modality="thermal", sha256=_digest(0))
    with pytest.raises(ValueError, match="timezone-aware"):
        NewItem(camera="c", modality="visible", sha256=_digest(0), captured_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="camera"):
        NewItem(camera="", modality="visible", sha256=_digest(0))
    assert repo.count(session=session, model_version="v1", modality="visible") == 0


def test_delete_cascades(session: Session, repo: GalleryRepository) -> None:
    ids = repo.add_items(session=session, items=_items(0, 4), vectors=_vectors(4), model_version="v1")
    session.commit()
    assert repo.delete(session=session, id=ids[1]) is True
    assert repo.delete(session=session, id=ids[1]) is False
    assert repo.delete_many(session=session, ids=[ids[2], ids[3], 10**9]) == 2
    session.commit()
    assert repo.list_ids(session=session, model_version="v1", modality="visible").tolist() == [ids[0]]
    assert session.scalar(select(func.count()).select_from(Embedding)) == 1


def test_stats_and_counts(session: Session, repo: GalleryRepository) -> None:
    repo.add_items(
        session=session, items=_items(0, 3, camera="camA"), vectors=_vectors(3), model_version="v1"
    )
    repo.add_items(
        session=session, items=_items(3, 2, camera="camB"), vectors=_vectors(2), model_version="v1"
    )
    repo.add_items(
        session=session,
        items=_items(5, 4, camera="camB", modality="infrared"),
        vectors=_vectors(4),
        model_version="v1",
    )
    repo.add_items(
        session=session, items=_items(0, 1, camera="camA"), vectors=_vectors(1), model_version="v2"
    )
    session.commit()
    assert repo.stats(session=session) == {
        ("camA", "visible"): 4,
        ("camB", "infrared"): 4,
        ("camB", "visible"): 2,
    }
    assert repo.stats(session=session, model_version="v2") == {("camA", "visible"): 1}
    assert repo.count(session=session, model_version="v1", modality="infrared") == 4
    assert repo.count(session=session, model_version="v3", modality="infrared") == 0


def test_filter_ids_keeps_order_and_applies_filters(session: Session, repo: GalleryRepository) -> None:
    a = repo.add_items(
        session=session, items=_items(0, 5, camera="camA"), vectors=_vectors(5), model_version="v1"
    )
    b = repo.add_items(
        session=session, items=_items(5, 5, camera="camB"), vectors=_vectors(5), model_version="v1"
    )
    session.commit()
    order = [b[3], a[0], -1, 10**9, a[4], b[0], a[0]]
    rows = repo.filter_ids(session=session, ids=np.array(order))
    assert [row.id for row in rows] == [b[3], a[0], a[4], b[0]]
    rows = repo.filter_ids(session=session, ids=order, cameras=["camA"])
    assert [row.id for row in rows] == [a[0], a[4]]
    since, until = T0 + timedelta(minutes=3), T0 + timedelta(minutes=6)  # items 3, 4, 5
    rows = repo.filter_ids(session=session, ids=order, since=since, until=until)
    assert [row.id for row in rows] == [a[4], b[0]]
    with pytest.raises(ValueError, match="timezone-aware"):
        repo.filter_ids(session=session, ids=order, since=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="before until"):
        repo.filter_ids(session=session, ids=order, since=until, until=since)
    allowed = repo.matching_ids(
        session=session, model_version="v1", modality="visible", cameras=["camB"], since=since
    )
    assert allowed.dtype == np.int64 and allowed.tolist() == b


def test_embeddings_of_returns_stored_vectors_in_the_order_asked(
    session: Session, repo: GalleryRepository
) -> None:
    vectors = _vectors(9, dim=16, seed=5)
    ids = repo.add_items(session=session, items=_items(0, 9), vectors=vectors, model_version="v1")
    session.commit()
    order = [ids[7], ids[0], -1, 10**9, ids[3], ids[7], ids[8], ids[1]]  # chunks of 4, a gap, a repeat
    found, got = repo.embeddings_of(session=session, ids=np.array(order))
    assert found.dtype == np.int64 and got.dtype == np.float32
    assert found.tolist() == [ids[7], ids[0], ids[3], ids[8], ids[1]]
    np.testing.assert_array_equal(got, vectors[[7, 0, 3, 8, 1]])
    none, empty = repo.embeddings_of(session=session, ids=[10**9])
    assert none.shape == (0,) and empty.shape == (0, 0)
    with pytest.raises(ValueError):
        repo.embeddings_of(session=session, ids=[-5])


def test_iter_embeddings_rebuilds_everything(session: Session, repo: GalleryRepository) -> None:
    vectors = _vectors(11, dim=16, seed=3)
    ids = repo.add_items(session=session, items=_items(0, 11), vectors=vectors, model_version="v1")
    repo.add_items(
        session=session, items=_items(0, 2, modality="infrared"), vectors=_vectors(2, 16), model_version="v1"
    )
    session.commit()
    batches = list(repo.iter_embeddings(session=session, model_version="v1", modality="visible", batch=4))
    assert [len(batch_ids) for batch_ids, _ in batches] == [4, 4, 3]
    got_ids = np.concatenate([batch_ids for batch_ids, _ in batches])
    got_vectors = np.concatenate([batch_vectors for _, batch_vectors in batches])
    assert got_ids.dtype == np.int64 and got_vectors.dtype == np.float32
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_vectors, vectors)
    assert list(repo.iter_embeddings(session=session, model_version="v9", modality="visible")) == []


def test_add_items_bulk_matches_add_items(session: Session, repo: GalleryRepository) -> None:
    vectors = _vectors(7, seed=3)
    ids = repo.add_items_bulk(session=session, items=_items(0, 7), vectors=vectors, model_version="v1")
    assert len(ids) == 7 and ids == sorted(ids) and len(set(ids)) == 7
    orm_ids = repo.add_items(session=session, items=_items(7, 2), vectors=_vectors(2), model_version="v1")
    assert min(orm_ids) > max(ids)  # both paths share the id sequence
    session.commit()
    session.expunge_all()
    for i, item_id in enumerate(ids):
        item = repo.get(session=session, id=item_id)
        assert item is not None and item.sha256 == _digest(i) and item.source == f"cam1/{i:04d}.jpg"
        assert item.captured_at == T0 + timedelta(minutes=i) and item.created_at is not None
        assert item.embedding is not None
        np.testing.assert_array_equal(item.embedding.as_array(), vectors[i])
    with pytest.raises(DuplicateItemError, match="already in the gallery"):
        repo.add_items_bulk(session=session, items=_items(6, 2), vectors=_vectors(2), model_version="v1")
    with pytest.raises(DuplicateItemError, match="repeated within the batch"):
        repo.add_items_bulk(session=session, items=_items(20, 1) * 2, vectors=_vectors(2), model_version="v1")
    with pytest.raises(ValueError, match="got 2 items"):
        repo.add_items_bulk(session=session, items=_items(30, 2), vectors=_vectors(3), model_version="v1")
    assert repo.add_items_bulk(session=session, items=[], vectors=_vectors(0), model_version="v1") == []
    assert repo.count(session=session, model_version="v1", modality="visible") == 9
    batch_ids, batch_vectors = next(
        repo.iter_embeddings(session=session, model_version="v1", modality="visible")
    )
    got = dict(zip(batch_ids.tolist(), batch_vectors, strict=True))
    np.testing.assert_array_equal(got[ids[4]], vectors[4])
