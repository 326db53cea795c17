"""FaissGalleryIndex against the brute-force NumpyGalleryIndex reference (house-style §36)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from vireid.index import CorruptIndexError, FaissGalleryIndex, GalleryIndex, NumpyGalleryIndex

DIM = 32


def _normalised(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.choice(10_000, size=400, replace=False).astype(np.int64)
    return ids, _normalised(rng, 400), _normalised(rng, 25)


def _pair(
    ids: np.ndarray, vectors: np.ndarray, *, metric: str = "ip"
) -> tuple[FaissGalleryIndex, NumpyGalleryIndex]:
    faiss_index = FaissGalleryIndex(vectors.shape[1], metric=metric)
    numpy_index = NumpyGalleryIndex(vectors.shape[1], metric=metric)
    faiss_index.add(ids, vectors)
    numpy_index.add(ids, vectors)
    return faiss_index, numpy_index


def _assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    assert a[0].dtype == np.float32 and a[1].dtype == np.int64
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


def test_both_follow_the_protocol() -> None:
    assert isinstance(FaissGalleryIndex(4), GalleryIndex)
    assert isinstance(NumpyGalleryIndex(4), GalleryIndex)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("k", [1, 10, 400, 450])
def test_faiss_matches_numpy(data: tuple[np.ndarray, np.ndarray, np.ndarray], metric: str, k: int) -> None:
    ids, vectors, queries = data
    faiss_index, numpy_index = _pair(ids, vectors, metric=metric)
    got, want = faiss_index.search(queries, k), numpy_index.search(queries, k)
    _assert_same(got, want)
    assert got[1].shape == (25, k)
    if k > 400:
        assert (got[1][:, 400:] == -1).all() and np.isneginf(got[0][:, 400:]).all()
    # Scores are inner products of the returned vectors (a hand check of the reference).
    if metric == "ip":
        first = numpy_index.vectors_for(got[1][:, 0])
        np.testing.assert_allclose(got[0][:, 0], np.einsum("ij,ij->i", queries, first), atol=1e-5)


def test_ties_are_broken_by_ascending_id() -> None:
    rng = np.random.default_rng(1)
    # Small integer entries: dot products are exact whatever the summation order, so ties are real.
    vectors = rng.integers(-1, 2, size=(300, 8)).astype(np.float32)
    vectors[100:140] = vectors[5]  # a big tie group
    ids = rng.permutation(5000)[:300].astype(np.int64)
    queries = np.concatenate([vectors[[5]], rng.integers(-1, 2, size=(15, 8)).astype(np.float32)])
    faiss_index, numpy_index = _pair(ids, vectors)
    for k in (1, 3, 20, 41, 299):
        got = faiss_index.search(queries, k)
        _assert_same(got, numpy_index.search(queries, k))
        order = np.lexsort((got[1], -got[0]), axis=1)
        assert (order == np.arange(k)).all()
    # By hand: every vector scoring the maximum against query 0, smallest ids first.
    all_scores = vectors @ queries[0]
    tied = np.sort(ids[all_scores == all_scores.max()])
    assert tied.size >= 41
    top = faiss_index.search(queries[:1], 41)[1][0]
    np.testing.assert_array_equal(top, tied[:41])


def test_allowed_ids_filter(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, vectors, queries = data
    faiss_index, numpy_index = _pair(ids, vectors)
    allowed = np.concatenate([ids[::7], [999_999]])  # an unknown id is ignored
    got = faiss_index.search(queries, 20, allowed_ids=allowed)
    _assert_same(got, numpy_index.search(queries, 20, allowed_ids=allowed))
    assert np.isin(got[1], ids[::7]).all()
    few = faiss_index.search(queries, 5, allowed_ids=ids[:2])
    assert (few[1][:, 2:] == -1).all() and np.isin(few[1][:, :2], ids[:2]).all()
    nothing = faiss_index.search(queries, 3, allowed_ids=np.zeros(0, np.int64))
    assert (nothing[1] == -1).all() and np.isneginf(nothing[0]).all()


def test_remove(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, vectors, queries = data
    faiss_index, numpy_index = _pair(ids, vectors)
    best = faiss_index.search(queries[:1], 1)[1][0, 0]
    gone = np.array([best, *ids[:50], 123_456_789])
    assert faiss_index.remove(gone) == numpy_index.remove(gone) == 51
    assert len(faiss_index) == len(numpy_index) == 349
    np.testing.assert_array_equal(faiss_index.ids(), numpy_index.ids())
    got = faiss_index.search(queries, 10)
    _assert_same(got, numpy_index.search(queries, 10))
    assert not np.isin(got[1], gone).any()
    assert faiss_index.remove([]) == 0
    faiss_index.add(ids[:1], vectors[:1])  # a removed id may come back
    assert len(faiss_index) == 350


def test_add_refuses_bad_input_and_keeps_the_index(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, vectors, _ = data
    for index in _pair(ids[:10], vectors[:10]):
        before = index.ids()
        with pytest.raises(ValueError, match=r"shape \(N, 32\), got \(2, 16\)"):
            index.add([1, 2], vectors[:2, :16])
        with pytest.raises(ValueError, match="float32"):
            index.add(ids[10:12], vectors[10:12].astype(np.float64))
        with pytest.raises(ValueError, match="already in the index"):
            index.add(ids[9:11], vectors[9:11])
        with pytest.raises(ValueError, match="repeated"):
            index.add([5, 5], vectors[10:12])
        with pytest.raises(ValueError, match="got 3 ids"):
            index.add(ids[10:13], vectors[10:12])
        bad = vectors[10:12].copy()
        bad[0, 0] = np.inf
        with pytest.raises(ValueError, match="NaN or infinity"):
            index.add(ids[10:12], bad)
        with pytest.raises(ValueError, match=r"\(N, 32\)"):
            index.search(vectors[:1, :8], 3)
        with pytest.raises(ValueError, match="positive integer"):
            index.search(vectors[:1], 0)
        np.testing.assert_array_equal(index.ids(), before)


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="IDMap"):
        FaissGalleryIndex(8, factory="Flat")
    with pytest.raises(ValueError, match="metric"):
        FaissGalleryIndex(8, metric="cosine")
    with pytest.raises(ValueError, match="dim"):
        NumpyGalleryIndex(0)
    with pytest.raises(ValueError, match="cannot build"):
        FaissGalleryIndex(8, factory="IDMap,Nonsense")


@pytest.mark.parametrize("cls", [FaissGalleryIndex, NumpyGalleryIndex])
def test_save_load_round_trip(
    cls: type, data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    ids, vectors, queries = data
    index = cls(DIM)
    index.add(ids, vectors)
    index.remove(ids[:5])
    path = tmp_path / "sub" / "gallery.idx"
    index.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["gallery.idx"]  # no temp file left
    loaded = cls.load(path)
    assert (loaded.dim, len(loaded), loaded.metric) == (DIM, 395, "ip")
    for k in (1, 17):
        a, b = index.search(queries, k), loaded.search(queries, k)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("cls", [FaissGalleryIndex, NumpyGalleryIndex])
def test_load_errors(cls: type, data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        cls.load(tmp_path / "missing")
    index = cls(DIM)
    index.add(*data[:2])
    path = tmp_path / "index.bin"
    index.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptIndexError, match=str(path.name)):
        cls.load(path)


def test_factory_recovered_on_load(tmp_path: Path) -> None:
    index = FaissGalleryIndex(8)
    index.save(tmp_path / "x.faiss")
    assert FaissGalleryIndex.load(tmp_path / "x.faiss").factory == "IDMap2,Flat"
    assert FaissGalleryIndex.load(tmp_path / "x.faiss", factory="given").factory == "given"


def _clustered(rng: np.random.Generator, n: int, dim: int = 16, centres: int = 40) -> np.ndarray:
    centre = _normalised(rng, centres, dim)[rng.integers(0, centres, n)]
    return _normalised_rows(centre + 0.3 * rng.standard_normal((n, dim)).astype(np.float32))


def _normalised_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _batches(ids: np.ndarray, vectors: np.ndarray, size: int = 128):  # type: ignore[no-untyped-def]
    return lambda: ((ids[i : i + size], vectors[i : i + size]) for i in range(0, len(ids), size))


def test_trainable_factory_stays_exact_until_built() -> None:
    rng = np.random.default_rng(3)
    vectors = _clustered(rng, 300)
    index = FaissGalleryIndex(16, factory="IDMap,IVF4,Flat")
    assert index.built_factory == "IDMap2,Flat" and index.factory == "IDMap,IVF4,Flat"
    assert index.training_needs().min_vectors == 39 * 4
    index.add(np.arange(100), vectors[:100])
    assert index.build_reason() is None  # 100 < 39 * 4: stays exact
    index.add(np.arange(100, 300), vectors[100:])
    assert index.build_reason() == "train"
    reference = NumpyGalleryIndex(16)
    reference.add(np.arange(300), vectors)
    _assert_same(index.search(vectors[:5], 7), reference.search(vectors[:5], 7))


def test_build_trains_on_a_sample_and_holds_every_vector() -> None:
    rng = np.random.default_rng(5)
    vectors = _clustered(rng, 600)
    ids = np.arange(1000, 1600)
    built = FaissGalleryIndex.build(16, _batches(ids, vectors), factory="IDMap2,IVF8,Flat", nprobe=8)
    assert built.built_factory == "IDMap2,IVF8,Flat" and built.trained_count == 600
    assert np.array_equal(built.ids(), ids) and built.build_reason() is None
    reference = NumpyGalleryIndex(16)
    reference.add(ids, vectors)
    _assert_same(built.search(vectors[:9], 5), reference.search(vectors[:9], 5))  # nprobe = nlist: exact
    built.add(np.arange(3000, 3000 + 1800), _clustered(rng, 1800))
    assert built.build_reason(retrain_factor=4.0) == "retrain"


def test_build_of_a_small_gallery_stays_exact() -> None:
    rng = np.random.default_rng(6)
    vectors = _clustered(rng, 50)
    built = FaissGalleryIndex.build(16, _batches(np.arange(50), vectors), factory="IDMap2,IVF8,Flat")
    assert built.built_factory == "IDMap2,Flat" and built.trained_count == 0 and len(built) == 50


def test_build_stops_when_asked() -> None:
    vectors = _clustered(np.random.default_rng(7), 400)
    with pytest.raises(InterruptedError):
        FaissGalleryIndex.build(
            16, _batches(np.arange(400), vectors), factory="IDMap2,IVF8,Flat", should_stop=lambda: True
        )


@pytest.mark.parametrize(
    "factory", ["IDMap2,IVF16,Flat", "IDMap2,IVF16_HNSW8,Flat", "IDMap2,IVF16,PQ4x4,RFlat"]
)
def test_filtered_ivf_search_returns_k_when_k_pass(factory: str) -> None:
    rng = np.random.default_rng(8)
    vectors = _clustered(rng, 2000)
    ids = np.arange(2000)
    index = FaissGalleryIndex.build(16, _batches(ids, vectors, 500), factory=factory, nprobe=1)
    assert index.built_factory == factory
    allowed = ids[::97]  # 21 items scattered over many lists; nprobe=1 probes one of them
    reference = NumpyGalleryIndex(16)
    reference.add(ids, vectors)
    scores, found = index.search(vectors[:20], 10, allowed_ids=allowed)
    assert ((found >= 0).sum(axis=1) == 10).all() and np.isin(found, allowed).all()
    if "PQ" not in factory:  # every list scanned by the escalation: exact on the allowed set
        _assert_same((scores, found), reference.search(vectors[:20], 10, allowed_ids=allowed))


def test_hnsw_filtered_search_returns_k_and_ef_search_override() -> None:
    rng = np.random.default_rng(9)
    vectors = _clustered(rng, 1500)
    index = FaissGalleryIndex(16, factory="IDMap2,HNSW8", ef_search=4)
    index.add(np.arange(1500), vectors)
    allowed = np.arange(0, 1500, 149)  # 11 items
    _, found = index.search(vectors[:30], 10, allowed_ids=allowed)
    assert ((found >= 0).sum(axis=1) == 10).all() and np.isin(found, allowed).all()
    reference = NumpyGalleryIndex(16)
    reference.add(np.arange(1500), vectors)
    exact = reference.search(vectors[:30], 10)[1]
    wide = index.search(vectors[:30], 10, ef_search=256)[1]
    assert np.mean([len(set(a) & set(b)) for a, b in zip(wide, exact, strict=True)]) >= 9.0
    with pytest.raises(ValueError, match="ef_search"):
        index.search(vectors[:1], 3, ef_search=0)


def test_nprobe_override_changes_what_is_scanned() -> None:
    rng = np.random.default_rng(10)
    vectors = _normalised(rng, 3000, 16)  # no structure: one list holds few true neighbours
    index = FaissGalleryIndex.build(16, _batches(np.arange(3000), vectors, 1000), factory="IDMap2,IVF32,Flat")
    reference = NumpyGalleryIndex(16)
    reference.add(np.arange(3000), vectors)
    queries = _normalised(rng, 40, 16)
    exact = reference.search(queries, 10)
    _assert_same(index.search(queries, 10, nprobe=32), exact)
    narrow = index.search(queries, 10, nprobe=1)[1]
    assert not np.array_equal(narrow, exact[1])


def test_hnsw_remove_leaves_tombstones_that_never_come_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    vectors = _clustered(rng, 300)
    index = FaissGalleryIndex(16, factory="IDMap2,HNSW16", ef_search=64)
    index.add(np.arange(300), vectors)
    assert index.remove([5, 6, 7, 99_999]) == 3
    assert len(index) == 297 and index.tombstones == 3 and not np.isin([5, 6, 7], index.ids()).any()
    _, found = index.search(vectors[5:8], 20)
    assert not np.isin(found, [5, 6, 7]).any() and (found >= 0).all()
    index.add([5], vectors[5:6])  # a removed id may come back with a new vector
    assert index.search(vectors[5:6], 1)[1][0, 0] == 5
    index.save(tmp_path / "h.faiss")
    loaded = FaissGalleryIndex.load(tmp_path / "h.faiss", factory="IDMap2,HNSW16")
    assert np.array_equal(loaded.ids(), index.ids()) and loaded.tombstones == 3
    assert index.build_reason() is None
    index.remove(np.arange(100, 200))
    assert index.build_reason() == "compact"


def test_approximate_factory_returns_valid_results() -> None:
    rng = np.random.default_rng(4)
    vectors = _normalised(rng, 200, 16)
    index = FaissGalleryIndex(16, factory="IDMap,HNSW16")
    index.add(np.arange(1000, 1200), vectors)
    scores, found = index.search(vectors[:10], 5)
    assert (found[:, 0] == np.arange(1000, 1010)).all()
    assert np.isclose(scores[:, 0], 1.0, atol=1e-5).all()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_faiss_idmap_over_ivf_remove_is_why_ivf_uses_tombstones() -> None:
    """FAISS's own IndexIDMap2 over IVF returns other ids after remove_ids; FaissGalleryIndex does not."""
    vectors = _clustered(np.random.default_rng(12), 300)
    ids = np.arange(1000, 1300)
    raw = faiss.index_factory(16, "IDMap2,IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    raw.train(vectors)
    raw.add_with_ids(vectors, ids)
    raw.remove_ids(faiss.IDSelectorBatch(np.array([1000, 1150])))
    faiss.extract_index_ivf(raw).nprobe = 4
    assert not np.array_equal(raw.search(vectors[295:], 1)[1].ravel(), ids[295:])  # FAISS: wrong ids
    index = FaissGalleryIndex.build(16, _batches(ids, vectors), factory="IDMap2,IVF4,Flat", nprobe=4)
    assert index.remove([1000, 1150]) == 2 and index.tombstones == 2 and len(index) == 298
    np.testing.assert_array_equal(index.search(vectors[295:], 1)[1].ravel(), ids[295:])
    assert 1150 not in index.search(vectors[150:151], 20)[1]


def test_refine_k_factor_default_is_used_by_searches() -> None:
    """A refined factory re-scores k_factor x k candidates exactly: a larger k_factor finds more of the
    exact top-k (the recommended 1M configuration relies on it, docs/benchmarks.md)."""
    rng = np.random.default_rng(13)
    vectors, ids = _normalised(rng, 4000, 16), np.arange(4000)
    queries = _normalised(rng, 50, 16)
    reference = NumpyGalleryIndex(16)
    reference.add(ids, vectors)
    exact = reference.search(queries, 10)[1]
    recall = {}
    for k_factor in (1.0, 16.0):
        index = FaissGalleryIndex.build(
            16, _batches(ids, vectors, 1000), factory="IDMap2,IVF8,PQ4x4,RFlat", nprobe=8, k_factor=k_factor
        )
        found = index.search(queries, 10)[1]
        recall[k_factor] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert recall[16.0] >= 0.8 > 0.5 > recall[1.0]
    with pytest.raises(ValueError, match="k_factor"):
        FaissGalleryIndex(16, k_factor=0.5)
