"""Tests for vireid.training.pseudo_labels against an independent dense loop reference (methods.md §0.3)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from vireid.training.pseudo_labels import (
    PseudoLabels,
    cluster_centroids,
    cluster_features,
    dbscan_pseudo_labels,
    drop_outliers,
    jaccard_distance,
    to_dense_distance,
)


# ------------------------------------------------------------------------------------------------------
# Dense, loop-based reference: methods.md §0.3 steps 1-7, written step by step (no shared code).
# ------------------------------------------------------------------------------------------------------
def reference_jaccard_distance(features: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """(N, N) float32 Jaccard distance, the literal dense recipe."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    # 1. exact L2 kNN including self, k1 columns
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, initial_rank = index.search(x, k1)

    # 2. k-reciprocal sets with the ``:width + 1`` slice (only k1 columns exist)
    def reciprocal(i: int, width: int) -> np.ndarray:
        forward = initial_rank[i, : width + 1]
        backward = initial_rank[forward, : width + 1]
        return forward[(backward == i).any(axis=1)]

    half = int(np.around(k1 / 2))
    sets_full = [reciprocal(i, k1) for i in range(n)]
    sets_half = [reciprocal(i, half) for i in range(n)]
    # 3-4. expansion and softmax weights of -d
    v = np.zeros((n, n), dtype=np.float32)
    xt = torch.from_numpy(x)
    for i in range(n):
        expanded = sets_full[i]
        for c in sets_full[i]:
            cand = sets_half[c]
            if len(np.intersect1d(cand, sets_full[i])) > 2 / 3 * len(cand):
                expanded = np.append(expanded, cand)
        expanded = np.unique(expanded)
        d = 2 - 2 * torch.mm(xt[i : i + 1], xt[expanded].T)
        v[i, expanded] = torch.softmax(-d, dim=1).numpy().ravel()
    # 5. query expansion
    if k2 != 1:
        v = np.stack([v[initial_rank[i, :k2]].mean(axis=0) for i in range(n)])
    # 6. Jaccard with min / (2 - min), clipped; sum of mins through a per-column inverted index
    inverted = [np.flatnonzero(v[:, k]) for k in range(n)]
    jac = np.empty((n, n), dtype=np.float32)
    for i in range(n):
        overlap = np.zeros(n, dtype=np.float32)
        for k in np.flatnonzero(v[i]):
            overlap[inverted[k]] += np.minimum(v[i, k], v[inverted[k], k])
        jac[i] = 1 - overlap / (2 - overlap)
    jac[jac < 0] = 0
    return jac


def reference_labels(jac: np.ndarray, eps: float, min_samples: int = 4) -> np.ndarray:
    """7. DBSCAN on the dense precomputed matrix."""
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(jac)


def clustered_features(
    seed: int, *, centres: int = 25, per: int = 16, dim: int = 32, noise: float = 0.8, background: int = 60
) -> np.ndarray:
    """Distinct random unit vectors: Gaussian clusters of varying size plus uniform background points."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    sizes = rng.integers(per // 2, per * 3 // 2 + 1, centres)
    parts = [c[k] + noise * rng.standard_normal((s, dim)) / np.sqrt(dim) for k, s in enumerate(sizes)]
    x = np.concatenate([*parts, rng.standard_normal((background, dim))])
    x = x[rng.permutation(len(x))]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a < 0, b < 0) and adjusted_rand_score(a[a >= 0], b[b >= 0]) == 1.0)


# ------------------------------------------------------------------------------------------------------
# Reference equivalence
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seed", "k1", "k2"), [(0, 30, 6), (1, 20, 1), (2, 15, 3), (3, 7, 2), (4, 30, 1), (5, 10, 10)]
)
def test_matches_dense_reference(seed: int, k1: int, k2: int) -> None:
    x = clustered_features(seed)
    expected = reference_jaccard_distance(x, k1, k2)
    got = jaccard_distance(x, k1=k1, k2=k2)
    assert isinstance(got, sp.csr_array) and got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(to_dense_distance(got), expected, atol=1e-5, rtol=0)
    # the stored pattern is exactly the set of pairs below 1 (plus exact-1.0 pairs never happen here)
    assert got.nnz == int((expected < 1).sum())
    for eps in (0.6, 0.3):
        ref = reference_labels(expected, eps)
        ours = dbscan_pseudo_labels(got, eps)
        assert ours.dtype == np.int64
        assert same_partition(ref, ours), (eps, ref.max(), ours.max())
        np.testing.assert_array_equal(ours, ref)  # same numbering too (first core point in index order)
        assert ref.max() >= 3 and (ref == -1).any()  # the case is non-trivial


def test_torch_input_and_symmetry() -> None:
    x = clustered_features(7, centres=10, background=20)
    a = jaccard_distance(x, k1=12, k2=4)
    b = jaccard_distance(torch.from_numpy(x).double(), k1=12, k2=4)
    np.testing.assert_array_equal(a.toarray(), b.toarray())
    dense = to_dense_distance(a)
    np.testing.assert_array_equal(dense, dense.T)
    assert np.all(a.diagonal() <= 1e-6)
    assert a.has_sorted_indices


def test_small_blocks_and_chunks_give_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocked kNN / chunked Jaccard boundaries must not change anything."""
    import vireid.training.pseudo_labels as pl

    x = clustered_features(8)
    expected = to_dense_distance(jaccard_distance(x, k1=20, k2=6))
    monkeypatch.setattr(pl, "KNN_BLOCK_CPU", 37)
    monkeypatch.setattr(pl, "WORK_ELEMENTS", 5000)
    monkeypatch.setattr(pl, "ACCUMULATOR_CELLS", 3000)
    np.testing.assert_allclose(to_dense_distance(jaccard_distance(x, k1=20, k2=6)), expected, atol=1e-6)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = clustered_features(9)
    cpu = to_dense_distance(jaccard_distance(x, k1=20, k2=6))
    gpu = to_dense_distance(jaccard_distance(torch.from_numpy(x).cuda(), k1=20, k2=6))
    np.testing.assert_allclose(gpu, cpu, atol=1e-5)


def test_jaccard_rejects_bad_input() -> None:
    x = clustered_features(0, centres=3, background=0)
    with pytest.raises(ValueError, match="L2-normalised"):
        jaccard_distance(x * 2)
    with pytest.raises(ValueError, match="k1"):
        jaccard_distance(x, k1=len(x) + 1)
    with pytest.raises(ValueError, match="k2"):
        jaccard_distance(x, k1=5, k2=6)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        jaccard_distance(x[0])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jaccard_distance(bad)


# ------------------------------------------------------------------------------------------------------
# DBSCAN sparse semantics
# ------------------------------------------------------------------------------------------------------
def test_dbscan_sparse_semantics_explicit_zeros_and_absent_diagonal() -> None:
    # points 0-3: mutually at explicit distance 0 -> one cluster of 4 (self counted);
    # point 4: absent diagonal (= 1.0) and one neighbour at 0.1 of point 0 -> 1 neighbour only -> border of 0.
    rows = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0, 4]
    cols = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4, 0]
    data = [0.0] * 16 + [0.1, 0.1]
    distance = sp.csr_array((np.array(data, np.float32), (rows, cols)), shape=(6, 6))
    assert distance.nnz == 18  # explicit zeros stored
    dense = to_dense_distance(distance)
    assert dense[4, 4] == 1.0 and dense[5, 5] == 1.0
    expected = DBSCAN(eps=0.3, min_samples=4, metric="precomputed").fit_predict(dense)
    np.testing.assert_array_equal(dbscan_pseudo_labels(distance, 0.3), expected)
    np.testing.assert_array_equal(expected, [0, 0, 0, 0, 0, -1])
    # with min_samples=2, point 4 has only its neighbour 0 (its own absent diagonal does not count)
    expected2 = DBSCAN(eps=0.3, min_samples=2, metric="precomputed").fit_predict(dense)
    np.testing.assert_array_equal(dbscan_pseudo_labels(distance, 0.3, min_samples=2), expected2)


def test_dbscan_dense_input_and_errors() -> None:
    x = clustered_features(3)
    dense = reference_jaccard_distance(x, 10, 2)
    np.testing.assert_array_equal(dbscan_pseudo_labels(dense, 0.5), reference_labels(dense, 0.5))
    sparse = jaccard_distance(x, k1=10, k2=2)
    with pytest.raises(ValueError, match="eps"):
        dbscan_pseudo_labels(sparse, 1.0)
    with pytest.raises(ValueError, match="eps"):
        dbscan_pseudo_labels(sparse, 0.0)
    with pytest.raises(ValueError, match="square"):
        dbscan_pseudo_labels(np.zeros((3, 4)), 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        dbscan_pseudo_labels(-np.ones((3, 3)), 0.5)
    with pytest.raises(ValueError, match="min_samples"):
        dbscan_pseudo_labels(dense, 0.5, min_samples=0)


def test_cluster_features_result() -> None:
    x = clustered_features(4)
    result = cluster_features(x, eps=0.6, k1=20, k2=6)
    expected = reference_labels(reference_jaccard_distance(x, 20, 6), 0.6)
    assert isinstance(result, PseudoLabels)
    np.testing.assert_array_equal(result.labels, expected)
    assert result.num_clusters == expected.max() + 1
    assert result.num_outliers == int((expected == -1).sum())
    with pytest.raises(ValueError):
        result.labels[0] = 5  # read-only
    with pytest.raises(AttributeError):
        result.num_clusters = 3  # type: ignore[misc]


def test_pseudo_labels_validation() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        PseudoLabels.from_labels([0, 2, -1])
    with pytest.raises(ValueError, match=">= -1"):
        PseudoLabels.from_labels([0, -2])
    empty = PseudoLabels.from_labels(np.array([-1, -1]))
    assert (empty.num_clusters, empty.num_outliers) == (0, 2)


# ------------------------------------------------------------------------------------------------------
# Centroids and outliers
# ------------------------------------------------------------------------------------------------------
def test_cluster_centroids_by_hand() -> None:
    feats = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0], [9.0, 9.0]], dtype=np.float32)
    labels = np.array([1, 0, 1, -1])
    raw = cluster_centroids(feats, labels, normalize_inputs=False)  # SDCL: raw means
    np.testing.assert_allclose(raw, [[0.0, 2.0], [2.0, 2.0]])
    normed = cluster_centroids(feats, labels, normalize_inputs=True)  # SALCR: means of unit vectors
    np.testing.assert_allclose(normed, [[0.0, 1.0], [(0.6 + 1.0) / 2, 0.4]], rtol=1e-6)
    assert isinstance(raw, np.ndarray) and raw.dtype == np.float32
    t = cluster_centroids(torch.from_numpy(feats), torch.from_numpy(labels), normalize_inputs=False)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), raw)


def test_cluster_centroids_errors() -> None:
    feats = np.ones((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="contiguous"):
        cluster_centroids(feats, np.array([0, 2, 2]), normalize_inputs=True)
    with pytest.raises(ValueError, match="no clusters"):
        cluster_centroids(feats, np.array([-1, -1, -1]), normalize_inputs=True)
    with pytest.raises(ValueError, match="labels"):
        cluster_centroids(feats, np.array([0, 1]), normalize_inputs=True)


def test_drop_outliers() -> None:
    labels = np.array([0, -1, 1, -1, 0])
    feats = np.arange(10).reshape(5, 2)
    paths = ["a", "b", "c", "d", "e"]
    kept_labels, kept_feats, kept_paths, kept_t = drop_outliers(labels, feats, paths, torch.arange(5))
    np.testing.assert_array_equal(kept_labels, [0, 1, 0])
    np.testing.assert_array_equal(kept_feats, feats[[0, 2, 4]])
    assert kept_paths == ["a", "c", "e"]
    assert kept_t.tolist() == [0, 2, 4]
    (t_labels,) = drop_outliers(torch.tensor([-1, 3]))
    assert t_labels.tolist() == [3]
    with pytest.raises(ValueError, match="length"):
        drop_outliers(labels, feats[:3])
