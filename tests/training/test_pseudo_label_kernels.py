"""Tests for the numba kernels of the pseudo-label step (vireid.training._pseudo_label_kernels).

The Jaccard kernels are checked bit for bit against the numpy implementation they replaced (kept below as
the reference), the top-k kernels against a stable sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import vireid.training.pseudo_labels as pl
from vireid.training import _pseudo_label_kernels as kernels


# ------------------------------------------------------------------------------------------------------
# Reference: the previous numpy implementation of the Jaccard step (inverted index, bincount, assembly)
# ------------------------------------------------------------------------------------------------------
@dataclass
class _UpperChunk:
    a: int
    indptr: np.ndarray
    cols: np.ndarray
    dist: np.ndarray


def _numpy_upper_jaccard(v: sp.csr_array, max_rows: int = 7) -> list[_UpperChunk]:
    n = v.shape[0]
    rows = np.repeat(np.arange(n), np.diff(v.indptr))
    ids = sp.csr_array((np.arange(1, v.nnz + 1), v.indices, v.indptr), shape=v.shape).tocsc()
    ids.sort_indices()
    order = ids.data - 1
    csc_pos = np.empty(v.nnz, dtype=np.int64)
    csc_pos[order] = np.arange(v.nnz)
    col_ptr, csc_rows, csc_vals = ids.indptr.astype(np.int64), ids.indices.astype(np.int64), v.data[order]
    partners = col_ptr[v.indices.astype(np.int64) + 1] - csc_pos
    chunks = []
    for a in range(0, n, max_rows):
        b = min(a + max_rows, n)
        e0, e1 = v.indptr[a], v.indptr[b]
        cnt = partners[e0:e1]
        pos = np.arange(int(cnt.sum())) + np.repeat(csc_pos[e0:e1] - (np.cumsum(cnt) - cnt), cnt)
        mins = np.minimum(np.repeat(v.data[e0:e1], cnt), csc_vals[pos])
        keys = np.repeat((rows[e0:e1] - a) * n, cnt) + csc_rows[pos]
        acc = np.bincount(keys, weights=mins, minlength=(b - a) * n)
        hit = np.flatnonzero(acc)
        s = acc[hit]
        dist = np.maximum(1.0 - s / (2.0 - s), 0.0).astype(np.float32)
        chunks.append(_UpperChunk(a, np.searchsorted(hit, np.arange(b - a + 1) * n), hit % n, dist))
    return chunks


def _numpy_symmetric(chunks: list[_UpperChunk], n: int) -> sp.csr_array:
    rows, cols, vals = [], [], []
    for c in chunks:
        row = np.repeat(np.arange(c.a, c.a + c.indptr.size - 1), np.diff(c.indptr))
        strict = c.cols != row
        rows += [row, c.cols[strict]]
        cols += [c.cols, row[strict]]
        vals += [c.dist, c.dist[strict]]
    r, k, d = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    order = np.lexsort((k, r))
    return sp.csr_array((d[order], k[order], pl._pointer_np(r[order], n)), shape=(n, n))


def random_encoding(seed: int, n: int = 60, per_row: int = 6) -> sp.csr_array:
    """Random (n, n) float32 CSR like V: sorted columns, empty rows (also the last), a few explicit zeros."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, per_row + 1, n)
    counts[rng.choice(n, 5, replace=False)] = 0
    counts[-2:] = 0
    cols = [np.sort(rng.choice(n // 2, c, replace=False)) for c in counts]
    data = rng.random(int(counts.sum()), dtype=np.float32) / per_row
    data[rng.choice(data.size, 3, replace=False)] = 0.0
    data[:4] = data[4]  # equal values: min() ties
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_array((data, np.concatenate(cols).astype(np.int32), indptr), shape=(n, n))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threads", [1, 2])
def test_jaccard_kernels_equal_numpy_implementation(seed: int, threads: int) -> None:
    v = random_encoding(seed)
    expected = _numpy_symmetric(_numpy_upper_jaccard(v), v.shape[0])
    with pl._numba_threads(threads):
        got = pl._jaccard_csr(v)
    assert got.dtype == np.float32 and got.indices.dtype == np.int32 and got.has_sorted_indices
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data.view(np.int32), expected.data.view(np.int32))  # bit for bit
    assert np.diff(got.indptr)[-2:].tolist() == [0, 0]  # empty rows stay empty (no diagonal)


def test_jaccard_kernels_chunking_does_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    v = random_encoding(3, n=80)
    expected = pl._jaccard_csr(v)
    monkeypatch.setattr(pl, "JACCARD_CHUNKS_PER_THREAD", 1)
    one = pl._jaccard_csr(v)
    monkeypatch.setattr(pl, "JACCARD_CHUNKS_PER_THREAD", 1000)  # more chunks than rows
    many = pl._jaccard_csr(v)
    for got in (one, many):
        np.testing.assert_array_equal(got.indices, expected.indices)
        np.testing.assert_array_equal(got.data, expected.data)


def test_cost_chunks() -> None:
    bounds = pl._cost_chunks(np.array([5, 0, 0, 1, 1, 1, 1, 1]), 4)
    assert bounds[0] == 0 and bounds[-1] == 8 and np.all(np.diff(bounds) > 0)
    assert pl._cost_chunks(np.zeros(3, dtype=np.int64), 8).tolist() == [0, 3]


# ------------------------------------------------------------------------------------------------------
# Top-k kernels
# ------------------------------------------------------------------------------------------------------
def _stable_topk(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("k", [1, 4, 9])
def test_topk_kernels_equal_stable_sort_with_ties(k: int) -> None:
    rng = np.random.default_rng(k)
    sims = rng.integers(0, 6, size=(23, 70)).astype(np.float32) / 5  # many exact ties
    rows = (np.full((23, k), -np.inf, dtype=np.float32), np.zeros((23, k), dtype=np.int64))
    cols = (np.full((23, k), -np.inf, dtype=np.float32), np.zeros((23, k), dtype=np.int64))
    for start in range(0, 70, 16):  # column blocks in ascending order, as _exact_knn feeds them
        block = np.ascontiguousarray(sims[:, start : start + 16])
        kernels.topk_rows(block, start, *rows)
        kernels.topk_cols(np.ascontiguousarray(block.T), start, *cols)  # rows of the transposed block
    want_vals, want_idx = _stable_topk(sims, k)
    for vals, idx in (rows, cols):
        np.testing.assert_array_equal(vals, want_vals)
        np.testing.assert_array_equal(idx, want_idx)  # ties: lower index first


def test_exact_knn_matches_full_topk_and_ignores_block_size() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(300, 16, generator=gen), dim=1)
    sims, rank = pl._exact_knn(x, 12, block_size=2048)
    full_vals, full_idx = (x @ x.T).topk(12, dim=1)
    assert not bool((full_vals[:, 1:] == full_vals[:, :-1]).any())  # no ties: the order is unique
    torch.testing.assert_close(sims, full_vals, rtol=0, atol=1e-6)
    assert torch.equal(rank, full_idx)
    small_sims, small_rank = pl._exact_knn(x, 12, block_size=37)
    assert torch.equal(small_rank, rank)
    torch.testing.assert_close(small_sims, sims, rtol=0, atol=1e-6)


def test_torch_topk_merges_of_the_cuda_path_match_the_kernels() -> None:
    # The CUDA path folds blocks with torch.topk merges (dense first, then only the entries above each
    # row's k-th value); run that logic on the CPU so it stays covered without a GPU.
    gen = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(300, 16, generator=gen), dim=1)
    sims, rank = pl._exact_knn(x, 12, block_size=37)
    for block in (37, 64, 2048):
        merged_sims, merged_rank = pl._exact_knn(x, 12, block_size=block, torch_merge=True)
        assert torch.equal(merged_rank, rank)
        torch.testing.assert_close(merged_sims, sims, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------------
# Plumbing
# ------------------------------------------------------------------------------------------------------
def test_numba_threads_context_restores() -> None:
    before = numba.get_num_threads()
    with pl._numba_threads(1):
        assert numba.get_num_threads() == 1
    with pl._numba_threads(10_000):  # capped
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS
    assert numba.get_num_threads() == before


def test_warm_up_threading_layer_and_heap_release() -> None:
    kernels.warm_up()
    assert numba.threading_layer() in {"workqueue", "omp", "tbb"}
    pl._release_free_heap()  # glibc malloc_trim, or a no-op


def test_dbscan_graph_scan_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    v = random_encoding(4, n=80)
    distance = pl._jaccard_csr(v)
    expected = pl.dbscan_pseudo_labels(distance, 0.6, min_samples=2)
    monkeypatch.setattr(pl, "WORK_ELEMENTS", 7)
    np.testing.assert_array_equal(pl.dbscan_pseudo_labels(distance, 0.6, min_samples=2), expected)
    bad = distance.copy()
    bad.data[-1] = -0.5  # in the last chunk
    with pytest.raises(ValueError, match=">= 0"):
        pl.dbscan_pseudo_labels(bad, 0.6)
