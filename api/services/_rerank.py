"""Test-time CMFP re-ranking of search candidates, in numpy (methods.md §A.4.1 step 1 and §A.6).

The API may not import torch or ``vireid.training`` (import-linter contract), so this is a numpy twin of
``vireid.training.methods.salcr.cmfp`` restricted to what ``POST /search`` needs; a test checks that both
agree on random inputs (``tests/api/services/test_rerank.py``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["cmfp_numpy", "cmfp_rerank", "knn_affinity"]

_BLOCK_ROWS = 1024


def knn_affinity(similarity: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """Row-normalised kNN affinity, as ``vireid.training.knn.knn_graph`` (methods.md §A.4.1 ``knn``).

    Per row: keep the entries ``>=`` the k-th largest value (ties at it are all kept, and the self-match
    is included in a homogeneous block), set the rest to 0, clamp at 0, divide by the row sum. A row
    whose kept entries are all ``<= 0`` stays all zero.

    Args:
        similarity: (N, M) float32 similarities.
        k: neighbours per row, ``1 <= k <= M``.

    Returns:
        (N, M) float32; each row sums to 1 or is all zero.

    Raises:
        ValueError: not 2-D, or ``k`` out of range.
    """
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be 2-D, got shape {similarity.shape}")
    if not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must be in [1, {similarity.shape[1]}], got {k}")
    kth = np.partition(similarity, similarity.shape[1] - k, axis=1)[:, similarity.shape[1] - k, None]
    kept = np.where(similarity >= kth, similarity, 0.0).clip(min=0.0).astype(np.float32, copy=False)
    total = kept.sum(axis=1, keepdims=True)
    affinity: npt.NDArray[np.float32] = (kept / np.where(total > 0, total, 1.0)).astype(
        np.float32, copy=False
    )
    return affinity


def _propagate(
    rows: npt.NDArray[np.float32], targets: npt.NDArray[np.float32], k: int
) -> npt.NDArray[np.float32]:
    """``knn(rows · targetsᵀ, min(k, M)) · targets``: (b, D) × (M, D) → (b, D)."""
    propagated: npt.NDArray[np.float32] = knn_affinity(rows @ targets.T, min(k, targets.shape[0])) @ targets
    return propagated


def _normalise(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


def cmfp_numpy(
    features_a: npt.NDArray[np.float32], features_b: npt.NDArray[np.float32], *, k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Cross-modality feature propagation of two sets (methods.md §A.4.1 step 1).

    Each row of ``[F_a; F_b]`` becomes ``norm(knn(x F_aᵀ) F_a + knn(x F_bᵀ) F_b)``: the k-NN-weighted
    neighbours of the row in both sets, each block row-normalised (:func:`knn_affinity`), ``k`` capped at
    each set's size. Computed in blocks of rows, so memory is about ``1024 × max(N_a, N_b)`` floats.

    Args:
        features_a: (N_a, D) float32, L2-normalised (the query side).
        features_b: (N_b, D) float32, L2-normalised (the candidate side).
        k: neighbours per block (methods.md §A.6: 30 SYSU, 8 RegDB and the official tester default).

    Returns:
        ``(F̃_a, F̃_b)``: (N_a, D) and (N_b, D) float32, L2-normalised.

    Raises:
        ValueError: bad shapes, an empty set or ``k < 1``.
    """
    a = np.asarray(features_a, dtype=np.float32)
    b = np.asarray(features_b, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N_a, D) and (N_b, D) arrays, got {a.shape} and {b.shape}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("cmfp needs at least one feature in each set")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = []
    for source in (a, b):
        fused = [
            _propagate(source[i : i + _BLOCK_ROWS], a, k) + _propagate(source[i : i + _BLOCK_ROWS], b, k)
            for i in range(0, source.shape[0], _BLOCK_ROWS)
        ]
        out.append(_normalise(np.concatenate(fused)))
    return out[0], out[1]


def cmfp_rerank(
    query: npt.NDArray[np.float32], candidates: npt.NDArray[np.float32], *, k: int
) -> npt.NDArray[np.float32]:
    """Re-score search candidates by test-time CMFP (methods.md §A.6) of the query and the candidates.

    The query and the candidates are the two sets of :func:`cmfp_numpy`; each candidate's new score is
    the inner product of its propagated vector with the propagated query (cosine: both are unit
    vectors), in [-1, 1].

    Args:
        query: (D,) or (1, D) float32, L2-normalised query (one crop, or a fused tracklet).
        candidates: (R, D) float32, L2-normalised gallery vectors of the top-R candidates.
        k: CMFP neighbours per block.

    Returns:
        (R,) float32 re-ranked scores, in the order of ``candidates``.

    Raises:
        ValueError: bad shapes, no candidate or ``k < 1``.
    """
    q = np.asarray(query, dtype=np.float32).reshape(1, -1)
    fused_q, fused_c = cmfp_numpy(q, candidates, k=k)
    scores: npt.NDArray[np.float32] = (fused_c @ fused_q[0]).astype(np.float32, copy=False)
    return scores
