"""Numba kernels of the pseudo-label step (:mod:`vireid.training.pseudo_labels`, methods.md §0.3).

* :func:`topk_rows` / :func:`topk_cols`: fold one block of ``X·Xᵀ`` into the running top-k of its rows
  (resp. of its columns, i.e. the transposed block) by insertion, only for values above the current k-th.
* :func:`inverted_index`: the CSC view of the encoding ``V`` (counting-sort transpose).
* :func:`count_pairs` / :func:`fill_pairs` / :func:`mirror_pairs`: the Jaccard distances
  ``d = max(1 - s / (2 - s), 0)``, ``s = Σ_k min(V_ik, V_jk)``, of all pairs sharing a support column,
  written straight into the symmetric CSR arrays (count pass, fill pass of the upper triangle, mirror pass).

Float semantics are those of the numpy implementation they replace: ``s`` is summed in float64 over the
columns ``k`` in ascending order, then converted to float32 once. No ``fastmath``.

All kernels are compiled on first use and cached on disk (``cache=True``, next to this file or under
``NUMBA_CACHE_DIR``); :func:`warm_up` does that up front. The parallel ones run their outer ``prange`` on
``numba.get_num_threads()`` threads (``NUMBA_NUM_THREADS``, default: all cores).

Threading layer: unless ``NUMBA_THREADING_LAYER`` is set, importing this module selects numba's
``workqueue`` layer (plain pthreads). Numba's ``omp`` layer would share OpenMP state with torch's OpenMP
runtime: its start-up raises torch's intra-op thread count to numba's (an ``OMP_NUM_THREADS=1`` run
then gets 2 torch threads on 2 cores), and its spinning threads compete with torch's between the
alternating GEMM and top-k calls.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]

__all__ = [
    "count_pairs",
    "fill_pairs",
    "inverted_index",
    "mirror_pairs",
    "topk_cols",
    "topk_rows",
    "warm_up",
]

#: Columns handled together by :func:`topk_cols` (four 64-byte cache lines of float32 per block row).
COL_TILE = 64


# ----------------------------------------------------------------------------------------------------------
# Running top-k (values descending; ties keep the candidate seen first, i.e. the lower index)
# ----------------------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _insert(vals: np.ndarray, idx: np.ndarray, value: float, index: int) -> None:
    """Insert ``value`` (> ``vals[-1]``) into the descending row ``vals``, after the values equal to it."""
    p = vals.size - 1
    while p > 0 and vals[p - 1] < value:
        vals[p] = vals[p - 1]
        idx[p] = idx[p - 1]
        p -= 1
    vals[p] = value
    idx[p] = index


@njit(parallel=True, cache=True)
def topk_rows(block: np.ndarray, offset: int, vals: np.ndarray, idx: np.ndarray) -> None:
    """Fold the (B, M) block into the running top-k of its B rows (in place).

    Args:
        block: (B, M) float32 C-contiguous similarities; column ``c`` is the point ``offset + c``.
        offset: Global index of the block's first column.
        vals: (B, k) float32 running top-k values, descending (``-inf`` = empty slot).
        idx: (B, k) int64 running top-k indices.
    """
    k = vals.shape[1]
    for r in prange(block.shape[0]):
        thr = vals[r, k - 1]
        for c in range(block.shape[1]):
            value = block[r, c]
            if value > thr:
                _insert(vals[r], idx[r], value, offset + c)
                thr = vals[r, k - 1]


@njit(parallel=True, cache=True)
def topk_cols(block: np.ndarray, offset: int, vals: np.ndarray, idx: np.ndarray) -> None:
    """Fold the transposed (B, M) block into the running top-k of its M columns (in place).

    Columns are processed in tiles of :data:`COL_TILE` so the block is read row-wise; a block row's tile is
    first tested as a whole against the tile's k-th values (vectorisable), which is rarely passed.

    Args:
        block: (B, M) float32 C-contiguous similarities; row ``r`` is the point ``offset + r``.
        offset: Global index of the block's first row.
        vals: (M, k) float32 running top-k values of the columns, descending.
        idx: (M, k) int64 running top-k indices of the columns.
    """
    m, k = block.shape[1], vals.shape[1]
    for t in prange((m + COL_TILE - 1) // COL_TILE):
        j0 = t * COL_TILE
        width = min(COL_TILE, m - j0)
        thr = vals[j0 : j0 + width, k - 1].copy()
        for r in range(block.shape[0]):
            row = block[r, j0 : j0 + width]
            hit = False
            for q in range(width):
                hit |= row[q] > thr[q]
            if not hit:
                continue
            for q in range(width):
                if row[q] > thr[q]:
                    _insert(vals[j0 + q], idx[j0 + q], row[q], offset + r)
                    thr[q] = vals[j0 + q, k - 1]


# ----------------------------------------------------------------------------------------------------------
# Jaccard pair sums
# ----------------------------------------------------------------------------------------------------------
@njit(cache=True)
def inverted_index(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSC view of an (N, N) CSR matrix by a counting-sort transpose.

    Args:
        indptr, indices, data: (N + 1,) int64, (nnz,) int64, (nnz,) float32 CSR arrays.

    Returns:
        ``(col_ptr, rows, values, csc_pos)``: (N + 1,) int64 column pointer, (nnz,) int64 row ids ascending
        within each column, (nnz,) float32 values, and (nnz,) int64 CSC position of every CSR entry.
    """
    n = indptr.size - 1
    col_ptr = np.zeros(n + 1, dtype=np.int64)
    for e in range(indices.size):
        col_ptr[indices[e] + 1] += 1
    for c in range(n):
        col_ptr[c + 1] += col_ptr[c]
    cursor = col_ptr[:-1].copy()
    rows = np.empty(indices.size, dtype=np.int64)
    values = np.empty(indices.size, dtype=np.float32)
    csc_pos = np.empty(indices.size, dtype=np.int64)
    for i in range(n):
        for e in range(indptr[i], indptr[i + 1]):
            p = cursor[indices[e]]
            cursor[indices[e]] = p + 1
            rows[p], values[p], csc_pos[e] = i, data[e], p
    return col_ptr, rows, values, csc_pos


@njit(cache=True)
def _row_overlaps(
    i: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    csc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    acc: np.ndarray,
    hits: np.ndarray,
    sums: np.ndarray,
) -> int:
    """Overlaps ``s_ij = Σ_k min(V_ik, V_jk)`` of row i with every row ``j >= i`` sharing a column k.

    The terms are added to the all-zero float64 accumulator ``acc`` column by column (CSR order, ascending
    when the indices are sorted); the non-zero ``s_ij`` are then moved, ``j`` ascending, to ``hits`` /
    ``sums`` by a branch-free compaction that leaves ``acc`` all-zero again.

    Returns:
        The number ``m`` of non-zero overlaps, stored in ``hits[:m]`` (int64 ``j``) and ``sums[:m]``.
    """
    col_ptr, rows, values, csc_pos = csc
    end = i
    for e in range(indptr[i], indptr[i + 1]):
        a, stop = data[e], col_ptr[indices[e] + 1]
        for p in range(csc_pos[e], stop):  # the rows j >= i of column k, ascending
            b = values[p]
            acc[rows[p]] += a if a < b else b
        end = max(end, rows[stop - 1] + 1)  # the column holds (i, k) itself, so it is not empty
    m = 0
    for j in range(i, end):
        s = acc[j]
        acc[j] = 0.0
        hits[m], sums[m] = j, s
        m += s != 0.0
    return m


@njit(parallel=True, cache=True)
def count_pairs(
    bounds: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    csc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Count the non-zero overlaps ``s_ij`` per row: upper (``j >= i``) and mirrored (``j < i``) entries.

    Args:
        bounds: (C + 1,) int64 row-chunk boundaries, ``0 = bounds[0] < ... < bounds[C] = N``.
        indptr, indices, data: CSR arrays of V ((N + 1,) int64, (nnz,) int64, (nnz,) float32).
        csc: :func:`inverted_index` of V.

    Returns:
        ``(upper, lower)``: (N,) int64 counts of the pairs ``j >= i`` of row i, and of the pairs
        ``j < i`` (the entries row i receives by symmetry).
    """
    n = indptr.size - 1
    upper = np.zeros(n, dtype=np.int64)
    lower = np.zeros(n, dtype=np.int64)
    for c in prange(bounds.size - 1):
        acc, hits, sums = np.zeros(n), np.empty(n, dtype=np.int64), np.empty(n)
        mine = np.zeros(n, dtype=np.int64)
        for i in range(bounds[c], bounds[c + 1]):
            m = _row_overlaps(i, indptr, indices, data, csc, acc, hits, sums)
            upper[i] = m
            for q in range(m):
                mine[hits[q]] += 1
            if m and hits[0] == i:
                mine[i] -= 1  # the diagonal is not mirrored
        lower += mine  # prange array reduction (one private copy per thread)
    return upper, lower


@njit(parallel=True, cache=True, error_model="numpy")  # s = 2 would give inf, as in numpy, not raise
def fill_pairs(
    bounds: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    csc: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    start: np.ndarray,
    out_indices: np.ndarray,
    out_data: np.ndarray,
) -> None:
    """Write the distances of the pairs ``j >= i`` of every row i, ``j`` ascending, from ``start[i]`` on.

    Args:
        bounds, indptr, indices, data, csc: as for :func:`count_pairs`.
        start: (N,) int64 first output slot of each row's upper entries.
        out_indices: (nnz_out,) int32 or int64 column ids (written in place).
        out_data: (nnz_out,) float32 distances ``max(1 - s / (2 - s), 0)`` (written in place).
    """
    n = indptr.size - 1
    for c in prange(bounds.size - 1):
        acc, hits, sums = np.zeros(n), np.empty(n, dtype=np.int64), np.empty(n)
        for i in range(bounds[c], bounds[c + 1]):
            m = _row_overlaps(i, indptr, indices, data, csc, acc, hits, sums)
            q0 = start[i]
            for q in range(m):
                s = sums[q]
                out_indices[q0 + q] = hits[q]
                out_data[q0 + q] = np.float32(max(1.0 - s / (2.0 - s), 0.0))


@njit(parallel=True, cache=True)
def mirror_pairs(
    targets: np.ndarray,
    out_indptr: np.ndarray,
    lower: np.ndarray,
    out_indices: np.ndarray,
    out_data: np.ndarray,
) -> None:
    """Copy every upper entry ``(i, j > i)`` to ``(j, i)``, filling the first ``lower[j]`` slots of row j.

    Each target-row range is handled by one task, which visits the source rows ``i`` in ascending order
    (so each row's mirrored entries come out with ascending columns) and finds the entries with ``j`` in
    its range by binary search in row i's sorted upper part.

    Args:
        targets: (R + 1,) int64 target-row range boundaries, ``0 = targets[0] < ... < targets[R] = N``.
        out_indptr: (N + 1,) int64 pointer of the symmetric CSR.
        lower: (N,) int64 mirrored entries per row (from :func:`count_pairs`).
        out_indices, out_data: the symmetric CSR arrays, upper parts already filled (written in place).
    """
    for t in prange(targets.size - 1):
        lo, hi = targets[t], targets[t + 1]
        cursor = out_indptr[lo:hi].copy()
        for i in range(hi - 1):
            row_end = out_indptr[i + 1]
            p = (
                out_indptr[i]
                + lower[i]
                + np.searchsorted(out_indices[out_indptr[i] + lower[i] : row_end], lo)
            )
            while p < row_end and out_indices[p] < hi:
                j = out_indices[p]
                if j != i:
                    q = cursor[j - lo]
                    cursor[j - lo] = q + 1
                    out_indices[q] = i
                    out_data[q] = out_data[p]
                p += 1


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel for the argument types the callers use.

    The first call of each kernel otherwise pays this cost (about a second from the cache, tens of seconds
    when compiling) inside the first pseudo-label step.
    """
    block = np.eye(4, dtype=np.float32)
    vals, idx = np.full((4, 2), -np.inf, dtype=np.float32), np.zeros((4, 2), dtype=np.int64)
    topk_rows(block, 0, vals, idx)
    topk_cols(block, 0, vals, idx)
    indptr, indices = np.arange(5, dtype=np.int64), np.arange(4, dtype=np.int64)
    data = np.ones(4, dtype=np.float32)
    csc = inverted_index(indptr, indices, data)
    bounds = np.array([0, 4], dtype=np.int64)
    _, lower = count_pairs(bounds, indptr, indices, data, csc)
    for dtype in (np.int32, np.int64):
        out_indices, out_data = np.empty(4, dtype=dtype), np.empty(4, dtype=np.float32)
        fill_pairs(bounds, indptr, indices, data, csc, indptr[:-1] + lower, out_indices, out_data)
        mirror_pairs(bounds, indptr, lower, out_indices, out_data)
