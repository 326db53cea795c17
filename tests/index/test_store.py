"""IndexStore: layout, crash-safe saves, SQL checks, rebuilds, restarts and cross-process reloads."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from vireid.index import (
    CorruptIndexError,
    GalleryRepository,
    IndexManifest,
    IndexStore,
    NewItem,
    NumpyGalleryIndex,
    SharedIndex,
    make_sessionmaker,
)
from vireid.index import _store as store_module

DIM = 16
MV = "0123456789abcdef"


def _normalised(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _items(camera: str, start: int, n: int, modality: str = "visible") -> list[NewItem]:
    return [
        NewItem(camera=camera, modality=modality, sha256=hashlib.sha256(f"{camera}{i}".encode()).hexdigest())
        for i in range(start, start + n)
    ]


def _ingest(
    store: IndexStore, session: Session, camera: str, vectors: np.ndarray, *, modality: str = "visible"
) -> list[int]:
    """The unit of work a CLI ingest or the API performs: rows, index entries, commit, save."""
    repo = GalleryRepository()
    index = store.load_or_rebuild(MV, modality, dim=DIM, session=session, repository=repo)
    ids = repo.add_items(
        session=session, items=_items(camera, 0, len(vectors), modality), vectors=vectors, model_version=MV
    )
    index.add(ids, vectors)
    session.commit()
    store.save(MV, modality)
    return ids


def _reference(session: Session) -> NumpyGalleryIndex:
    """Brute-force index over what SQL holds: what any loaded or rebuilt index must return."""
    reference = NumpyGalleryIndex(DIM)
    for ids, vectors in GalleryRepository().iter_embeddings(
        session=session, model_version=MV, modality="visible"
    ):
        reference.add(ids, vectors)
    return reference


def _assert_matches(index: SharedIndex, reference: NumpyGalleryIndex, queries: np.ndarray) -> None:
    got, want = index.search(queries, 7), reference.search(queries, 7)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_sessionmaker(engine)() as sess:
        yield sess


def test_layout_and_manifest(tmp_path: Path, session: Session) -> None:
    store = IndexStore(tmp_path)
    ids = _ingest(store, session, "camA", _normalised(6, 0))
    folder = tmp_path / "indexes" / MV
    assert sorted(p.name for p in folder.iterdir()) == ["visible.faiss", "visible.json"]
    manifest = json.loads((folder / "visible.json").read_text())
    assert manifest["dim"] == DIM and manifest["count"] == 6 and manifest["format_version"] == 1
    assert manifest["factory"] == "IDMap2,Flat" and manifest["metric"] == "ip"
    assert (manifest["model_version"], manifest["modality"]) == (MV, "visible")
    assert manifest["ids_sha256"] == hashlib.sha256(np.sort(ids).astype("<i8").tobytes()).hexdigest()
    assert manifest["index_sha256"] == hashlib.sha256((folder / "visible.faiss").read_bytes()).hexdigest()
    assert store.paths(MV, "visible") == (folder / "visible.faiss", folder / "visible.json")
    with pytest.raises(ValueError, match="model_version"):
        store.paths("../etc", "visible")
    with pytest.raises(ValueError, match="modality"):
        store.get(MV, "thermal", dim=DIM)
    with pytest.raises(ValueError, match="dim 16, asked for 8"):
        store.get(MV, "visible", dim=8)


def test_gallery_persists_across_ingests_and_restarts(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Camera A today, camera B tomorrow, each in a fresh process (new store, new engine)."""
    with make_sessionmaker(engine)() as session:
        ids_a = _ingest(IndexStore(tmp_path), session, "camA", _normalised(20, 1))
    with make_sessionmaker(engine)() as session:
        ids_b = _ingest(IndexStore(tmp_path), session, "camB", _normalised(15, 2))
    with make_sessionmaker(engine)() as session:
        store = IndexStore(tmp_path)
        index = store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=GalleryRepository())
        assert index.ids().tolist() == sorted(ids_a + ids_b)
        _assert_matches(index, _reference(session), _normalised(9, 3))
        assert GalleryRepository().stats(session=session) == {
            ("camA", "visible"): 20,
            ("camB", "visible"): 15,
        }


def test_clean_load_does_not_rebuild(
    tmp_path: Path, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    _ingest(IndexStore(tmp_path), session, "camA", _normalised(10, 4))
    caplog.set_level(logging.INFO, logger="vireid.index")
    store = IndexStore(tmp_path)
    store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=GalleryRepository())
    assert not any("rebuil" in record.getMessage() for record in caplog.records)
    assert not store.get(MV, "visible", dim=DIM).dirty


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def _wrong_manifest_dim(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["dim"] = 8
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("target", "damage"),
    [
        ("visible.faiss", _truncate),
        ("visible.faiss", _flip_byte),
        ("visible.json", _truncate),
        ("visible.json", _wrong_manifest_dim),
        ("visible.json", Path.unlink),
        ("visible.faiss", Path.unlink),
    ],
)
def test_damaged_files_are_rebuilt_from_sql(
    tmp_path: Path, session: Session, caplog: pytest.LogCaptureFixture, target: str, damage: object
) -> None:
    _ingest(IndexStore(tmp_path), session, "camA", _normalised(30, 5))
    queries = _normalised(6, 6)
    before = IndexStore(tmp_path).get(MV, "visible", dim=DIM).search(queries, 7)
    damage(tmp_path / "indexes" / MV / target)  # type: ignore[operator]
    store = IndexStore(tmp_path)
    if target == "visible.faiss" or damage is not Path.unlink:
        with pytest.raises((CorruptIndexError, FileNotFoundError)):
            store.get(MV, "visible", dim=DIM)
    caplog.set_level(logging.INFO, logger="vireid.index")
    index = store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=GalleryRepository())
    assert any("from SQL" in record.getMessage() for record in caplog.records)
    after = index.search(queries, 7)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    # The repaired pair was saved: the next start loads it cleanly.
    assert IndexStore(tmp_path).get(MV, "visible", dim=DIM).ids().tolist() == index.ids().tolist()


def test_rows_committed_without_index_save_are_recovered(tmp_path: Path, session: Session) -> None:
    """A crash after the SQL commit but before the index save: SQL has rows the file lacks."""
    store = IndexStore(tmp_path)
    _ingest(store, session, "camA", _normalised(10, 7))
    repo = GalleryRepository()
    extra = repo.add_items(
        session=session, items=_items("camB", 0, 3), vectors=_normalised(3, 8), model_version=MV
    )
    session.commit()
    index = IndexStore(tmp_path).load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=repo)
    assert set(extra) <= set(index.ids().tolist()) and len(index) == 13
    _assert_matches(index, _reference(session), _normalised(5, 9))


def test_crash_between_index_and_manifest_writes(
    tmp_path: Path, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = IndexStore(tmp_path)
    _ingest(store, session, "camA", _normalised(10, 10))
    original = store_module.atomic_write_bytes

    def crash_on_manifest(path: Path, data: bytes) -> Path:
        if str(path).endswith(".json"):
            raise OSError("simulated crash")
        return original(path, data)

    monkeypatch.setattr(store_module, "atomic_write_bytes", crash_on_manifest)
    with pytest.raises(OSError, match="simulated crash"):
        _ingest(store, session, "camB", _normalised(4, 11))
    monkeypatch.undo()
    folder = tmp_path / "indexes" / MV
    assert sorted(p.name for p in folder.iterdir()) == ["visible.faiss", "visible.json"]  # no temp files
    with pytest.raises(CorruptIndexError, match="digest"):
        IndexStore(tmp_path).get(MV, "visible", dim=DIM)
    index = IndexStore(tmp_path).load_or_rebuild(
        MV, "visible", dim=DIM, session=session, repository=GalleryRepository()
    )
    assert len(index) == 14
    _assert_matches(index, _reference(session), _normalised(5, 12))


def test_failed_index_write_keeps_the_old_files(
    tmp_path: Path, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = IndexStore(tmp_path)
    _ingest(store, session, "camA", _normalised(5, 13))
    folder = tmp_path / "indexes" / MV
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}

    def failing_replace(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("vireid.index._atomic.os.replace", failing_replace)
    store.get(MV, "visible", dim=DIM).add([999], _normalised(1, 14))
    with pytest.raises(OSError, match="disk full"):
        store.save(MV, "visible")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == saved
    assert store.get(MV, "visible", dim=DIM).dirty


def test_factory_change_triggers_rebuild(tmp_path: Path, session: Session) -> None:
    _ingest(IndexStore(tmp_path), session, "camA", _normalised(12, 15))
    store = IndexStore(tmp_path, factory="IDMap,Flat")
    with pytest.raises(CorruptIndexError, match="factory"):
        store.get(MV, "visible", dim=DIM)
    index = store.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=GalleryRepository())
    assert IndexManifest.read(store.paths(MV, "visible")[1]).factory == "IDMap,Flat"
    _assert_matches(index, _reference(session), _normalised(4, 16))


def test_rebuild_refuses_embeddings_of_another_dim(tmp_path: Path, session: Session) -> None:
    _ingest(IndexStore(tmp_path), session, "camA", _normalised(3, 17))
    with pytest.raises(ValueError, match="dim 16, expected 32"):
        IndexStore(tmp_path).rebuild(MV, "visible", dim=32, session=session, repository=GalleryRepository())


def test_reload_if_changed_picks_up_another_process(tmp_path: Path, session: Session) -> None:
    _ingest(IndexStore(tmp_path), session, "camA", _normalised(8, 18))
    service = IndexStore(tmp_path)
    served = service.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=GalleryRepository())
    assert service.reload_if_changed() == []
    ids_b = _ingest(IndexStore(tmp_path), session, "camB", _normalised(5, 19))  # the CLI, elsewhere
    assert service.reload_if_changed() == [(MV, "visible")]
    assert set(ids_b) <= set(served.ids().tolist()) and len(served) == 13  # same handle, new index
    assert service.reload_if_changed() == []
    _assert_matches(served, _reference(session), _normalised(4, 20))


def test_reload_with_unsaved_changes(tmp_path: Path, session: Session) -> None:
    _ingest(IndexStore(tmp_path), session, "camA", _normalised(8, 21))
    service = IndexStore(tmp_path)
    repo = GalleryRepository()
    served = service.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=repo)
    own = repo.add_items(
        session=session, items=_items("api", 0, 2), vectors=_normalised(2, 22), model_version=MV
    )
    served.add(own, _normalised(2, 22))
    session.commit()
    _ingest(IndexStore(tmp_path), session, "camB", _normalised(5, 23))  # saves a file without `own`
    assert service.reload_if_changed() == []  # kept: our unsaved additions would be lost
    assert set(own) <= set(served.ids().tolist())
    assert service.reload_if_changed(session=session, repository=repo) == [(MV, "visible")]
    assert len(served) == 15
    _assert_matches(served, _reference(session), _normalised(4, 24))


def test_concurrent_search_and_add(tmp_path: Path) -> None:
    store = IndexStore(tmp_path)
    index = store.get(MV, "infrared", dim=DIM)
    index.add(np.arange(100), _normalised(100, 25))
    errors: list[BaseException] = []
    queries = _normalised(4, 26)

    def searcher() -> None:
        try:
            for _ in range(50):
                scores, found = index.search(queries, 5)
                assert (found >= 0).all() and np.isfinite(scores).all()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    def writer() -> None:
        try:
            for start in range(100, 300, 10):
                index.add(np.arange(start, start + 10), _normalised(10, start))
                index.remove(np.arange(start - 5, start))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(2)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(index) == 200 and store.save_all() == [store.paths(MV, "infrared")[0]]
    assert store.save_all() == []


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = _normalised(30, seed + 1000)[rng.integers(0, 30, n)]
    x = centres + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_ivf_index_is_trained_in_the_background_and_keeps_writes_made_meanwhile(
    tmp_path: Path, engine: Engine, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact until 39 x nlist vectors, then trained from SQL in a thread; adds and removes made while
    it builds are replayed; saved with the trained factory and reloaded as such."""
    sessions = make_sessionmaker(engine)
    write_lock = threading.RLock()
    store = IndexStore(tmp_path, factory="IDMap2,IVF4,Flat", nprobe=4)
    store.enable_builds(sessions=sessions, repository=GalleryRepository(), write_lock=write_lock)
    ids = _ingest(store, session, "c1", _clustered(100, 1))
    shared = store.loaded_index(MV, "visible")
    assert shared is not None and shared.built_factory == "IDMap2,Flat" and shared.build_reason() is None

    started, release = threading.Event(), threading.Event()
    real_build = store_module.FaissGalleryIndex.build

    def slow_build(*args: object, **kwargs: object) -> object:
        started.set()
        assert release.wait(10)
        return real_build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module.FaissGalleryIndex, "build", slow_build)
    with write_lock:
        ids += _ingest(store, session, "c2", _clustered(100, 2))  # 200 >= 39 x 4: the build starts
    assert started.wait(10)
    # Writes while the build runs: on the current (exact) index, and logged for the new one.
    with write_lock:  # what the service does (no reload from disk, which would void the build)
        vectors = _clustered(20, 3)
        late = GalleryRepository().add_items(
            session=session, items=_items("c3", 0, 20), vectors=vectors, model_version=MV
        )
        shared.add(late, vectors)
        session.commit()
        store.save(MV, "visible")
        GalleryRepository().delete_many(session=session, ids=ids[:5])
        session.commit()
        shared.remove(ids[:5])
    assert shared.built_factory == "IDMap2,Flat"
    release.set()
    store.stop_builds(finish=True)
    assert shared.built_factory == "IDMap2,IVF4,Flat"
    expected = sorted(set(ids[5:]) | set(late))
    assert shared.ids().tolist() == expected
    _assert_matches(shared, _reference(session), _clustered(6, 9))  # nprobe = nlist: exact

    manifest = IndexManifest.read(store.paths(MV, "visible")[1])
    assert (manifest.factory, manifest.built_factory) == ("IDMap2,IVF4,Flat", None)
    assert manifest.trained_count in (200, 215)  # SQL reads may or may not see the late writes
    fresh = IndexStore(tmp_path, factory="IDMap2,IVF4,Flat", nprobe=4)
    loaded = fresh.load_or_rebuild(MV, "visible", dim=DIM, session=session, repository=GalleryRepository())
    assert loaded.built_factory == "IDMap2,IVF4,Flat" and loaded.ids().tolist() == expected


def test_rebuild_from_sql_trains_when_the_gallery_is_large_enough(tmp_path: Path, session: Session) -> None:
    store = IndexStore(tmp_path, factory="IDMap2,IVF4,Flat")
    _ingest(store, session, "c1", _clustered(300, 4))
    store.paths(MV, "visible")[0].unlink()
    rebuilt = IndexStore(tmp_path, factory="IDMap2,IVF4,Flat").load_or_rebuild(
        MV, "visible", dim=DIM, session=session, repository=GalleryRepository()
    )
    assert rebuilt.built_factory == "IDMap2,IVF4,Flat" and len(rebuilt) == 300


def test_stopped_build_leaves_the_current_index(tmp_path: Path, engine: Engine, session: Session) -> None:
    store = IndexStore(tmp_path, factory="IDMap2,IVF4,Flat")
    store.stop_builds()  # a service shutting down before the build would start
    store.enable_builds(sessions=make_sessionmaker(engine), repository=GalleryRepository())
    store.stop_builds()
    _ingest(store, session, "c1", _clustered(200, 5))
    shared = store.loaded_index(MV, "visible")
    assert shared is not None and shared.built_factory == "IDMap2,Flat" and shared.build_reason() == "train"


def test_a_factory_that_fits_only_the_model_width_is_accepted(tmp_path: Path, session: Session) -> None:
    """PQ256 needs a width divisible by 256: the store takes it and fails only for another width."""
    store = IndexStore(tmp_path, factory="IDMap2,IVF2048,PQ256x4fs,RFlat", nprobe=768, k_factor=64)
    with pytest.raises(ValueError, match="multiple of the number of subquantizers"):
        store.get(MV, "visible", dim=DIM)
    assert store.get(MV, "infrared", dim=2048).built_factory == "IDMap2,Flat"
    with pytest.raises(ValueError, match="k_factor"):
        IndexStore(tmp_path, k_factor=0.5)
