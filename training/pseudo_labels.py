"""Pseudo labels: k-reciprocal Jaccard distance + DBSCAN, centroids and outlier handling.

This is the clustering step shared by SALCR, SDCL and ADCA (methods.md §0.3, §D.2-3, §E). The maths is the
original k-reciprocal re-ranking recipe; the implementation is vectorised and memory-bounded:

* exact kNN by blocked ``torch.mm`` (each block product is used for both row blocks, so only the upper
  triangle of ``X·Xᵀ``) with a running top-k, updated by numba insertion kernels on the CPU (only values
  above a row's current k-th are inserted) and by ``torch.topk`` merges on CUDA;
* k-reciprocal sets and the expansion rule on the padded ``(N, k1)`` neighbour table;
* the encoding ``V`` and its query expansion as sparse row lists;
* the Jaccard overlap ``Σ_k min(V_ik, V_jk)`` only for pairs that share a support column: numba kernels
  walk the inverted index (CSC) of V for the pairs ``j >= i`` of each row, sum them in a per-thread dense
  float64 accumulator, and write the distances straight into the symmetric CSR (a count pass sizes it, a
  fill pass writes the upper triangle, a mirror pass copies it below the diagonal).

The result is a sparse CSR matrix: an absent entry means distance 1.0 (no shared support), a stored entry
may be an explicit 0.0 (e.g. the diagonal). For a CUDA tensor input, kNN and encoding run on
the GPU; query expansion, the Jaccard sums (numpy/scipy/numba) and DBSCAN (sklearn) run on the CPU. The
numba kernels (:mod:`vireid.training._pseudo_label_kernels`) use as many threads as torch
(``torch.get_num_threads()``); their first call in a process loads them from numba's disk cache (about a
second) or compiles them (tens of seconds, once per installation).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numba
import numpy as np
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

from vireid.training import _pseudo_label_kernels as kernels

__all__ = [
    "PseudoLabels",
    "cluster_centroids",
    "cluster_features",
    "dbscan_pseudo_labels",
    "drop_outliers",
    "jaccard_distance",
    "to_dense_distance",
]

logger = logging.getLogger(__name__)

#: Rows per block of the blocked kNN matrix product (CPU / CUDA).
KNN_BLOCK_CPU = 2048
KNN_BLOCK_CUDA = 8192
#: Upper bound on the elements of one temporary work tensor (rows x candidates x ...).
WORK_ELEMENTS = 1 << 22
#: Upper bound on the cells of a dense (rows x N) work map of the encoding step.
ACCUMULATOR_CELLS = 1 << 22
#: torch intra-op threads of the encoding step on the CPU. Its ~30 small ops per row chunk gain little from
#: threads, and on a busy machine each parallel region can wait a scheduler time slice for a descheduled
#: thread: at N = 20k on 2 loaded cores it took 0.7-0.9 s single-threaded and 5-22 s with 2 threads.
ENCODE_THREADS_CPU = 1
#: Row chunks per numba thread in the Jaccard kernels (equal estimated cost; more = finer load balance).
JACCARD_CHUNKS_PER_THREAD = 16
#: Tolerance on ``| ||x|| - 1 |`` when checking that the features are L2-normalised.
NORM_TOLERANCE = 1e-3

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
T = TypeVar("T")
#: ``timed(name, fn) -> fn()``: how :func:`_jaccard_steps` runs each named step (a hook for timing).
StepTimer = Callable[[str, Callable[[], Any]], Any]
_KERNEL_LOCK = threading.RLock()
try:
    _MALLOC_TRIM: Any = ctypes.CDLL(None).malloc_trim  # the process's own symbols (glibc on Linux)
except (OSError, AttributeError, TypeError):  # not glibc
    _MALLOC_TRIM = None


# ----------------------------------------------------------------------------------------------------------
# Result type
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PseudoLabels:
    """Result of one clustering pass over one modality.

    Attributes:
        labels: (N,) int64 cluster ids in ``0..num_clusters-1``; ``-1`` marks an outlier.
        num_clusters: Number of clusters ``K``.
        num_outliers: Number of samples labelled ``-1``.
    """

    labels: np.ndarray
    num_clusters: int
    num_outliers: int

    @classmethod
    def from_labels(cls, labels: np.ndarray | Sequence[int]) -> PseudoLabels:
        """Build the result from a label vector, counting clusters and outliers.

        Args:
            labels: (N,) integer labels, ``-1`` = outlier, clusters numbered ``0..K-1``.

        Raises:
            ValueError: if labels are not 1-D, below -1, or the cluster ids are not contiguous.
        """
        arr = np.asarray(labels)
        _check_labels(arr)
        arr = arr.astype(np.int64, copy=True)
        arr.setflags(write=False)
        return cls(labels=arr, num_clusters=int(arr.max(initial=-1)) + 1, num_outliers=int((arr < 0).sum()))


def _check_labels(labels: np.ndarray) -> None:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if labels.size and labels.min() < -1:
        raise ValueError(f"labels must be >= -1 (-1 = outlier), got min {labels.min()}")
    present = np.unique(labels[labels >= 0])
    if present.size and (present[0] != 0 or present[-1] != present.size - 1):
        raise ValueError(
            "cluster ids must be contiguous 0..K-1 (remap with np.unique(..., return_inverse=True)); "
            f"got {present.size} ids in [{present[0]}, {present[-1]}]"
        )


# ----------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------
def _as_features(features: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate (N, D) L2-normalised features and return them as a float32 tensor (device kept)."""
    x = torch.from_numpy(np.asarray(features)) if not isinstance(features, torch.Tensor) else features
    x = x.detach()
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features must be a non-empty (N, D) array, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"features must be floating point, got {x.dtype}")
    x = x.to(torch.float32).contiguous()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("features contain NaN or inf")
    norm_error = float((x.norm(dim=1) - 1.0).abs().max())
    if norm_error > NORM_TOLERANCE:
        raise ValueError(f"features must be L2-normalised rows (max | ||x|| - 1 | = {norm_error:.3g})")
    return x


# ----------------------------------------------------------------------------------------------------------
# Step 1: exact kNN (blocked, upper triangle of X·Xᵀ only, running top-k)
# ----------------------------------------------------------------------------------------------------------
def _merge_dense(
    vals: torch.Tensor, idx: torch.Tensor, block: torch.Tensor, offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a full (B, M) similarity block into the running top-k of its B rows."""
    k = vals.shape[1]
    top, pos = block.topk(min(k, block.shape[1]), dim=1)
    merged, sel = torch.cat([vals, top], dim=1).topk(k, dim=1)
    return merged, torch.cat([idx, pos + offset], dim=1).gather(1, sel)


def _merge_sparse(
    vals: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, cand: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge candidates ``(rows, cols, cand)`` (rows ascending) into the running top-k of their rows."""
    b, k = vals.shape
    counts = torch.bincount(rows, minlength=b)
    width = int(counts.max())
    pos = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    pad_vals = torch.full((b, width), -torch.inf, dtype=vals.dtype, device=vals.device)
    pad_idx = torch.zeros((b, width), dtype=idx.dtype, device=idx.device)
    pad_vals[rows, pos] = cand
    pad_idx[rows, pos] = cols
    merged, sel = torch.cat([vals, pad_vals], dim=1).topk(k, dim=1)
    return merged, torch.cat([idx, pad_idx], dim=1).gather(1, sel)


def _update_topk(vals: torch.Tensor, idx: torch.Tensor, block: torch.Tensor, offset: int) -> None:
    """Update the running top-k (in place) of the B rows of a (B, M) block whose columns start at offset.

    Once a row holds k finite values, only block entries above its current k-th value are candidates,
    which avoids a full top-k of every block.
    """
    thr = vals[:, -1:]
    if bool(torch.isinf(thr).any()):
        vals[:], idx[:] = _merge_dense(vals, idx, block, offset)
        return
    rows, cols = torch.nonzero(block > thr, as_tuple=True)
    if rows.numel():
        vals[:], idx[:] = _merge_sparse(vals, idx, rows, cols + offset, block[rows, cols])


def _exact_knn(
    x: torch.Tensor, k: int, *, block_size: int, torch_merge: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product kNN of every row against all rows, self included (methods.md §0.3 step 1).

    Each block product ``X_a·X_bᵀ`` (b >= a) updates the rows of block a and, transposed, of block b. On the
    CPU the running top-k is updated by the numba insertion kernels; every row then meets its candidates in
    ascending index order, so equal similarities keep the lower index first. On CUDA it is updated by
    ``torch.topk`` merges (tie order unspecified).

    Args:
        x: (N, D) float32 L2-normalised features.
        k: Number of neighbours, ``k <= N``.
        block_size: Rows per block of the blocked product.
        torch_merge: Use the ``torch.topk`` merges (default: on CUDA only). Lets the CPU tests cover the
            CUDA path's merge logic.

    Returns:
        ``(sims, rank)``: (N, k) float32 similarities sorted descending and the (N, k) int64 indices. For unit
        vectors this is the ascending L2 order of the recipe (ties aside).
    """
    n = x.shape[0]
    torch_merge = x.is_cuda if torch_merge is None else torch_merge
    vals = torch.full((n, k), -torch.inf, dtype=x.dtype, device=x.device)
    idx = torch.zeros((n, k), dtype=torch.long, device=x.device)
    starts = list(range(0, n, block_size))
    for pos, a in enumerate(starts):
        a_end = min(a + block_size, n)
        for b in starts[pos:]:
            b_end = min(b + block_size, n)
            sim = x[a:a_end] @ x[b:b_end].T
            if torch_merge:
                _update_topk(vals[a:a_end], idx[a:a_end], sim, b)
                if b != a:
                    _update_topk(vals[b:b_end], idx[b:b_end], sim.T, a)
                continue
            sim_np = sim.numpy()
            kernels.topk_rows(sim_np, b, vals[a:a_end].numpy(), idx[a:a_end].numpy())
            if b != a:
                kernels.topk_cols(sim_np, a, vals[b:b_end].numpy(), idx[b:b_end].numpy())
    return vals, idx


# ----------------------------------------------------------------------------------------------------------
# Steps 2-4: k-reciprocal sets, expansion, softmax encoding (on the features' device)
# ----------------------------------------------------------------------------------------------------------
def _sort_rows(t: torch.Tensor) -> torch.Tensor:
    """Row-wise ascending sort (numpy's SIMD sort on CPU, several times faster than torch's there)."""
    if t.device.type == "cpu":
        return torch.from_numpy(np.sort(t.numpy(), axis=1))
    return t.sort(dim=1).values


def _row_chunks(n: int, per_row: int) -> list[tuple[int, int]]:
    step = max(1, min(WORK_ELEMENTS // max(per_row, 1), ACCUMULATOR_CELLS // n))
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _reciprocal_mask(rank: torch.Tensor, width: int) -> torch.Tensor:
    """(N, width) bool: ``rank[i, m]`` is k-reciprocal, i.e. ``i`` is in ``rank[rank[i, m], :width]``."""
    table = rank[:, :width]
    out = torch.empty(table.shape, dtype=torch.bool, device=rank.device)
    for a, b in _row_chunks(rank.shape[0], width * width):
        rows = torch.arange(a, b, device=rank.device).view(-1, 1, 1)
        out[a:b] = (table[table[a:b]] == rows).any(dim=-1)
    return out


def _expanded_sets(
    rank: torch.Tensor, rmask: torch.Tensor, hmask: torch.Tensor, span: tuple[int, int], marks: torch.Tensor
) -> torch.Tensor:
    """Expanded k-reciprocal sets of the rows in ``span`` (methods.md §0.3 steps 2-3).

    Args:
        rank, rmask, hmask: (N, k1) kNN table, (N, k1) R(·, k1) and (N, h) R(·, k1/2) membership masks.
        span: Row range ``(a, b)``.
        marks: (>= b - a, N + 1) all-False bool scratch map (left all-False).

    Returns:
        (B, W) int64 member ids, unique and ascending per row, right-aligned after ``-1`` padding.
    """
    (a, b), (k1, width) = span, (rank.shape[1], hmask.shape[1])
    rk, rm = rank[a:b], rmask[a:b]
    local = torch.arange(b - a, device=rank.device).unsqueeze(1)
    rset = torch.where(rm, rk, -1)  # R(i, k1), padded with -1
    sink = torch.where(rm, rk, marks.shape[1] - 1)  # the last column of the map is a scratch sink
    marks[local, sink] = True  # R(i, k1) as a dense row map
    cand_half = rank[rk, :width].flatten(1)  # rank[c, :h] of every candidate c, (B, k1 * h)
    cand_hmask = hmask[rk].flatten(1)  # membership of R(c, k1/2)
    inter = marks[local, cand_half] & cand_hmask
    marks[local, sink] = False
    count = inter.view(-1, k1, width).sum(dim=-1).double()
    size = cand_hmask.view(-1, k1, width).sum(dim=-1).double()
    accept = (rm & (count > (2.0 / 3.0) * size)).repeat_interleave(width, dim=1)  # the recipe's float rule
    members = _sort_rows(torch.cat([rset, torch.where(accept & cand_hmask, cand_half, -1)], dim=1))
    dup = torch.zeros_like(members, dtype=torch.bool)
    dup[:, 1:] = members[:, 1:] == members[:, :-1]
    members = _sort_rows(members.masked_fill_(dup, -1))
    width_out = int((members >= 0).sum(dim=1).max())
    return members[:, members.shape[1] - width_out :].contiguous()


def _member_similarity(
    x: torch.Tensor, rank: torch.Tensor, sims: torch.Tensor, members: torch.Tensor, a: int
) -> torch.Tensor:
    """(B, W) float32 ``x_i·x_j`` of the members (kNN values reused; the others by a gathered dot)."""
    b = a + members.shape[0]
    rank_sorted, perm = rank[a:b].sort(dim=1)
    pos = torch.searchsorted(rank_sorted, members).clamp_max_(rank.shape[1] - 1)
    found = rank_sorted.gather(1, pos) == members
    out = sims[a:b].gather(1, perm.gather(1, pos))
    miss_rows, miss_cols = torch.nonzero((members >= 0) & ~found, as_tuple=True)
    if miss_rows.numel():
        step = max(1, WORK_ELEMENTS // x.shape[1])
        dots = torch.empty(miss_rows.numel(), dtype=x.dtype, device=x.device)
        for s in range(0, miss_rows.numel(), step):
            xi = x[miss_rows[s : s + step] + a]
            xj = x[members[miss_rows[s : s + step], miss_cols[s : s + step]]]
            dots[s : s + step] = (xi * xj).sum(dim=1)
        out[miss_rows, miss_cols] = dots
    return out


def _encode(x: torch.Tensor, sims: torch.Tensor, rank: torch.Tensor, k1: int) -> sp.csr_array:
    """Sparse encoding ``V`` (methods.md §0.3 steps 2-4): (N, N) float32 CSR, rows summing to 1."""
    n = x.shape[0]
    half = min(int(np.around(k1 / 2)) + 1, k1)  # the ``:round(k1/2)+1`` slice of the recipe
    rmask = _reciprocal_mask(rank, k1)
    hmask = _reciprocal_mask(rank, half)
    chunks = _row_chunks(n, 8 * k1 * (1 + half))
    marks = torch.zeros((chunks[0][1], n + 1), dtype=torch.bool, device=x.device)
    counts, cols, vals = [], [], []
    for a, b in chunks:
        members = _expanded_sets(rank, rmask, hmask, (a, b), marks)
        valid = members >= 0
        sim = _member_similarity(x, rank, sims, members, a)
        logits = torch.where(valid, -(2.0 - 2.0 * sim), -torch.inf)
        weights = torch.softmax(logits, dim=1).nan_to_num_(0.0)  # an empty set gives an all-zero row
        valid_np = valid.cpu().numpy()
        counts.append(valid_np.sum(axis=1))
        cols.append(members.cpu().numpy()[valid_np])
        vals.append(weights.cpu().numpy()[valid_np])
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    return sp.csr_array((np.concatenate(vals), np.concatenate(cols), indptr), shape=(n, n))


# ----------------------------------------------------------------------------------------------------------
# Step 5: query expansion; step 6: sparse Jaccard through the inverted index (CPU, numpy/scipy)
# ----------------------------------------------------------------------------------------------------------
def _query_expansion(v: sp.csr_array, rank: np.ndarray, k2: int) -> sp.csr_array:
    """``V[i] <- mean of V over rank[i, :k2]`` (methods.md §0.3 step 5) as a sparse product."""
    n = v.shape[0]
    q = sp.csr_array(
        (np.ones(n * k2, dtype=np.float32), rank[:, :k2].reshape(-1), np.arange(0, n * k2 + 1, k2)),
        shape=(n, n),
    )
    out = sp.csr_array(q @ v)
    out.data /= np.float32(k2)
    out.sort_indices()
    return out


def _cost_chunks(cost: np.ndarray, num_chunks: int) -> np.ndarray:
    """(C + 1,) int64 boundaries of at most ``num_chunks`` consecutive row chunks of about equal cost."""
    cum = np.cumsum(cost, dtype=np.float64)
    targets = cum[-1] * np.arange(1, num_chunks) / num_chunks
    inner = np.searchsorted(cum, targets, side="right")
    return np.unique(np.concatenate([[0], inner, [cost.size]])).astype(np.int64)


def _jaccard_csr(v: sp.csr_array) -> sp.csr_array:
    """Symmetric Jaccard distances (step 6) of all pairs that share a support column of V.

    ``s_ij = Σ_k min(V_ik, V_jk)`` is summed (float64, columns ascending) by the numba kernels for the
    pairs ``j >= i`` through the inverted index of V, then ``d = max(1 - s / (2 - s), 0)`` as float32.
    A count pass sizes the output; the fill pass writes each row's upper entries after its mirrored slots;
    the mirror pass copies ``(i, j)`` to ``(j, i)``. Row r = [mirrored entries (cols < r, ascending) | own
    upper entries (cols >= r)], so the indices come out sorted without a sort.

    Args:
        v: (N, N) float32 CSR with non-negative values and sorted column indices per row.

    Returns:
        (N, N) float32 CSR; stored = pairs with ``s > 0`` (explicit zeros kept), absent = distance 1.0.
    """
    n = v.shape[0]
    indptr, indices = v.indptr.astype(np.int64), v.indices.astype(np.int64)
    data = np.ascontiguousarray(v.data, dtype=np.float32)
    csc = kernels.inverted_index(indptr, indices, data)
    col_ptr, _, _, csc_pos = csc
    partners = np.concatenate([[0], np.cumsum(col_ptr[indices + 1] - csc_pos)])  # rows j >= i, self incl.
    cost = partners[indptr[1:]] - partners[indptr[:-1]] + (n - np.arange(n)) // 8  # pair sums + final scan
    bounds = _cost_chunks(cost, JACCARD_CHUNKS_PER_THREAD * numba.get_num_threads())
    upper, lower = kernels.count_pairs(bounds, indptr, indices, data, csc)
    out_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(upper + lower, out=out_indptr[1:])
    idx_dtype = np.int32 if out_indptr[-1] < np.iinfo(np.int32).max else np.int64
    out_indices = np.empty(out_indptr[-1], dtype=idx_dtype)
    out_data = np.empty(out_indptr[-1], dtype=np.float32)
    kernels.fill_pairs(bounds, indptr, indices, data, csc, out_indptr[:-1] + lower, out_indices, out_data)
    kernels.mirror_pairs(_cost_chunks(lower, len(bounds) - 1), out_indptr, lower, out_indices, out_data)
    return sp.csr_array((out_data, out_indices, out_indptr.astype(idx_dtype)), shape=(n, n))


def _pointer_np(rows: np.ndarray, n: int) -> np.ndarray:
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
    return ptr


def _release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Called before the Jaccard output (the step's only large allocation, ~8 bytes per stored entry): the
    feature extraction, the kNN blocks and the encoding leave freed-but-retained heap behind (about 200 MB
    at N = 20k in the benchmark), which would otherwise add to the peak RSS.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run torch's CPU ops of the block (issued from this thread) on ``count`` intra-op threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _numba_threads(count: int) -> Iterator[None]:
    """Run the numba kernels of the block on ``count`` threads (capped by ``NUMBA_NUM_THREADS``).

    Callers from different Python threads are serialised: numba's ``workqueue`` layer aborts the process
    when two threads launch parallel kernels at once.
    """
    with _KERNEL_LOCK:
        previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
        try:
            yield
        finally:
            numba.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def jaccard_distance(features: np.ndarray | torch.Tensor, k1: int = 30, k2: int = 6) -> sp.csr_array:
    """k-reciprocal Jaccard distance of methods.md §0.3 steps 1-6, as a sparse matrix.

    Same values (to float32 rounding) as the dense recipe: exact kNN including self, k-reciprocal sets
    with the ``k1 + 1`` slice semantics (k1 columns), expansion with ``round(k1/2)`` and the ``> 2/3`` rule,
    softmax of ``-d`` with ``d = 2 - 2 xᵢ·xⱼ``, query expansion over ``initial_rank[:, :k2]`` (skipped for
    ``k2 == 1``), ``d_J = 1 - s / (2 - s)`` with ``s = Σ_k min(V_ik, V_jk)``, negatives clipped to 0.

    Memory: O(N·k1 + stored entries); no N×N array is ever built.

    Threads: the kNN product and the numba kernels use ``torch.get_num_threads()`` threads; the encoding of
    CPU features runs on :data:`ENCODE_THREADS_CPU` torch thread(s) (same result). Exactly equal kNN
    similarities are ordered by the lower index on the CPU (by ``torch.topk`` on CUDA).

    Args:
        features: (N, D) float L2-normalised rows, a numpy array or a torch tensor. A CUDA tensor runs the kNN
            and the encoding on its GPU (the sparse steps run on the CPU).
        k1: Neighbourhood size of the k-reciprocal sets, ``1 <= k1 <= N``.
        k2: Query-expansion size, ``1 <= k2 <= k1``.

    Returns:
        (N, N) float32 ``scipy.sparse.csr_array``, symmetric, column indices sorted. Stored entries are the
        pairs that share at least one encoding column (the diagonal always, as an explicit value ~0);
        **absent entries mean distance 1.0** (use :func:`to_dense_distance` to densify).

    Raises:
        ValueError: for a non-2-D, non-finite or non-normalised input, or out-of-range ``k1``/``k2``.
    """
    return _jaccard_steps(features, k1, k2, timed=_untimed)


def _untimed(name: str, fn: Callable[[], T]) -> T:
    return fn()


def _jaccard_steps(
    features: np.ndarray | torch.Tensor, k1: int, k2: int, *, timed: StepTimer
) -> sp.csr_array:
    """The steps of :func:`jaccard_distance`, each run as ``timed(name, fn)``.

    ``timed`` runs ``fn()`` and returns its result; :func:`jaccard_distance` passes a plain call, the
    benchmark (``benchmarks/pseudo_labels.py --breakdown``) one that records wall and CPU seconds under the
    names ``validate``, ``knn``, ``encode``, ``qexp`` (only for ``k2 != 1``) and ``jaccard``.
    """
    x = timed("validate", partial(_as_features, features))
    n = x.shape[0]
    if not 1 <= k1 <= n:
        raise ValueError(f"k1 must be in [1, N={n}], got {k1}")
    if not 1 <= k2 <= k1:
        raise ValueError(f"k2 must be in [1, k1={k1}], got {k2}")
    block = KNN_BLOCK_CUDA if x.is_cuda else KNN_BLOCK_CPU
    with torch.no_grad(), _numba_threads(torch.get_num_threads()):
        sims, rank = timed("knn", partial(_exact_knn, x, k1, block_size=block))
        with _torch_threads(torch.get_num_threads() if x.is_cuda else ENCODE_THREADS_CPU):
            v = timed("encode", partial(_encode, x, sims, rank, k1))
        del sims
        if k2 != 1:
            v = timed("qexp", partial(_query_expansion, v, rank.cpu().numpy(), k2))
        del rank
        _release_free_heap()
        out = timed("jaccard", partial(_jaccard_csr, v))
    logger.debug(
        "jaccard_distance: N=%d k1=%d k2=%d stored=%d (%.1f per row)", n, k1, k2, out.nnz, out.nnz / n
    )
    return out


def to_dense_distance(distance: np.ndarray | sp.sparray | sp.spmatrix) -> np.ndarray:
    """Dense (N, N) float32 copy of a distance matrix; absent sparse entries become 1.0.

    Raises:
        ValueError: if the matrix is not square.
    """
    if not sp.issparse(distance):
        dense = np.asarray(distance, dtype=np.float32)
        if dense.ndim != 2 or dense.shape[0] != dense.shape[1]:
            raise ValueError(f"distance must be square (N, N), got shape {dense.shape}")
        return dense.copy()
    csr = sp.csr_array(distance)
    if csr.shape[0] != csr.shape[1]:
        raise ValueError(f"distance must be square (N, N), got shape {csr.shape}")
    dense = np.ones(csr.shape, dtype=np.float32)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    dense[rows, csr.indices] = csr.data
    return dense


def _entries_at_most(data: np.ndarray, eps: float) -> np.ndarray:
    """(M,) int64 ascending positions of the entries ``<= eps``, scanned in chunks (no full-size mask).

    Raises:
        ValueError: if an entry is negative or not finite.
    """
    kept = [np.zeros(0, dtype=np.int64)]
    for start in range(0, data.size, WORK_ELEMENTS):
        chunk = data[start : start + WORK_ELEMENTS]
        if not np.isfinite(chunk).all() or chunk.min() < 0:
            raise ValueError("distance entries must be finite and >= 0")
        kept.append(np.flatnonzero(chunk <= eps) + start)
    return np.concatenate(kept)


def _sparse_dbscan_graph(distance: sp.sparray | sp.spmatrix, eps: float) -> sp.csr_array:
    """Entries <= eps plus every diagonal entry (absent diagonal = 1.0), rows sorted by value for sklearn.

    Works on the input's arrays without copying the full matrix (only the entries <= eps are extracted, and
    the input is scanned in chunks of :data:`WORK_ELEMENTS`).
    """
    csr = distance if distance.format == "csr" else sp.csr_array(distance)
    if not csr.has_canonical_format:
        csr = sp.csr_array(csr, copy=True)
        csr.sum_duplicates()
    n, data = csr.shape[0], csr.data
    kept = _entries_at_most(data, eps)
    rows = np.searchsorted(csr.indptr, kept, side="right") - 1
    cols, vals = csr.indices[kept].astype(np.int64), data[kept].astype(np.float64)
    is_diag = rows == cols
    diag = np.ones(n)  # absent (or > eps) self-distance: never a neighbour, as in the dense recipe
    diag[rows[is_diag]] = vals[is_diag]
    rows = np.concatenate([rows[~is_diag], np.arange(n)])
    cols = np.concatenate([cols[~is_diag], np.arange(n)])
    vals = np.concatenate([vals[~is_diag], diag])
    order = np.lexsort((vals, rows))
    return sp.csr_array((vals[order], cols[order], _pointer_np(rows, n)), shape=(n, n))


def dbscan_pseudo_labels(
    distance: np.ndarray | sp.sparray | sp.spmatrix, eps: float, min_samples: int = 4
) -> np.ndarray:
    """DBSCAN on a precomputed distance matrix (methods.md §0.3 step 7).

    A sparse input follows the :func:`jaccard_distance` convention (absent entry = 1.0, explicit zeros are
    real zero distances). Because sklearn treats absent sparse entries as "not neighbours", this is exact only
    for ``eps < 1``; each point's own entry is kept (an absent diagonal counts as 1.0, as in the dense
    recipe).
    The labels equal ``DBSCAN(eps, min_samples, metric="precomputed")`` on the densified matrix.

    Args:
        distance: (N, N) dense array or scipy sparse matrix of non-negative distances.
        eps: Neighbourhood radius (``<=``), e.g. 0.6 (SYSU-MM01) or 0.3 (RegDB).
        min_samples: Neighbours (self included) a core point needs.

    Returns:
        (N,) int64 labels, ``-1`` = outlier, clusters numbered by first core point in index order.

    Raises:
        ValueError: for a non-square matrix, negative/non-finite entries, ``eps <= 0`` or ``min_samples < 1``,
            or ``eps >= 1`` with a sparse input.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    if distance.shape[0] != distance.shape[1] or len(distance.shape) != 2:
        raise ValueError(f"distance must be square (N, N), got shape {distance.shape}")
    if sp.issparse(distance):
        if eps >= 1.0:
            raise ValueError(
                f"eps={eps} >= 1 would make absent sparse entries (distance 1.0) neighbours; "
                "densify with to_dense_distance() first"
            )
        graph: np.ndarray | sp.csr_array = _sparse_dbscan_graph(distance, eps)
    else:
        graph = np.asarray(distance)
        if not np.isfinite(graph).all() or graph.min(initial=0.0) < 0:
            raise ValueError("distance entries must be finite and >= 0")
    labels: np.ndarray = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)
    return labels.astype(np.int64)


def cluster_features(
    features: np.ndarray | torch.Tensor, *, eps: float, k1: int = 30, k2: int = 6, min_samples: int = 4
) -> PseudoLabels:
    """Jaccard distance + DBSCAN for one modality (methods.md §0.3); returns a :class:`PseudoLabels`."""
    labels = dbscan_pseudo_labels(jaccard_distance(features, k1=k1, k2=k2), eps, min_samples=min_samples)
    return PseudoLabels.from_labels(labels)


def cluster_centroids(
    features: ArrayT, labels: np.ndarray | torch.Tensor, *, normalize_inputs: bool
) -> ArrayT:
    """Per-cluster mean features in ascending label order, outliers (-1) ignored (methods.md §0.3, §D.2).

    * SALCR: ``normalize_inputs=True`` — the means of the L2-normalised features.
    * SDCL: ``normalize_inputs=False`` — the means of the raw (BN) features.

    The means are **not** re-normalised (SALCR's DAGL uses them as they are); the memories normalise them
    (:class:`vireid.training.memory.ClusterMemory` stores ``norm(c_k)``).

    Args:
        features: (N, D) float features, numpy or torch (any device).
        labels: (N,) integer labels, ``-1`` = outlier, clusters ``0..K-1`` (contiguous).
        normalize_inputs: L2-normalise each feature row before averaging.

    Returns:
        (K, D) float32 centroids, the same array type (and torch device) as ``features``.

    Raises:
        ValueError: on shape mismatch, non-contiguous cluster ids or no cluster at all.
    """
    is_numpy = not isinstance(features, torch.Tensor)
    x: torch.Tensor = (
        features if isinstance(features, torch.Tensor) else torch.from_numpy(np.asarray(features))
    )
    y_np = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if x.ndim != 2 or y_np.shape != (x.shape[0],):
        raise ValueError(f"need features (N, D) and labels (N,), got {tuple(x.shape)} and {y_np.shape}")
    _check_labels(y_np)
    num_clusters = int(y_np.max(initial=-1)) + 1
    if num_clusters == 0:
        raise ValueError("no clusters: every label is -1")
    x = x.detach().to(torch.float32)
    if normalize_inputs:
        x = torch.nn.functional.normalize(x, dim=1)
    keep = torch.from_numpy(y_np >= 0).to(x.device)
    y = torch.from_numpy(y_np).to(x.device)[keep]
    sums = torch.zeros(num_clusters, x.shape[1], dtype=torch.float32, device=x.device).index_add_(
        0, y, x[keep]
    )
    counts = torch.bincount(y, minlength=num_clusters).to(torch.float32)
    centroids = sums / counts.unsqueeze(1)
    return centroids.cpu().numpy() if is_numpy else centroids  # type: ignore[return-value]


def drop_outliers(labels: np.ndarray | torch.Tensor, *items: Any) -> tuple[Any, ...]:
    """Keep only the non-outlier samples (label != -1) of the labels and of every aligned item.

    Args:
        labels: (N,) integer labels, ``-1`` = outlier.
        *items: Aligned per-sample items: numpy arrays / torch tensors indexed on their first axis, or
            sequences (lists of paths, records) — returned as lists.

    Returns:
        ``(labels_kept, *items_kept)`` in the original order.

    Raises:
        ValueError: if an item's length differs from ``len(labels)``.
    """
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    keep = np.flatnonzero(y != -1)
    out: list[Any] = [y[keep]]
    if isinstance(labels, torch.Tensor):
        out[0] = labels[torch.from_numpy(keep).to(labels.device)]
    for item in items:
        if len(item) != y.shape[0]:
            raise ValueError(f"item of length {len(item)} does not match {y.shape[0]} labels")
        if isinstance(item, torch.Tensor):
            out.append(item[torch.from_numpy(keep).to(item.device)])
        elif isinstance(item, np.ndarray):
            out.append(item[keep])
        else:
            out.append([item[k] for k in keep])
    return tuple(out)
