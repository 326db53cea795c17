"""DAGL association: CMFP, bidirectional Sinkhorn OT and intra-label re-assignment (methods.md §A.4.1).

Pure functions over features and labels (house-style §12): tensors in, tensors out, no global state.

1. :func:`cmfp` — cross-modality feature propagation: ``F̃ = norm(A·[F_v; F_r])`` with the four kNN blocks
   ``A = [[knn(F_v F_vᵀ), knn(F_v F_rᵀ)], [knn(F_r F_vᵀ), knn(F_r F_rᵀ)]]`` (each block row-normalised, so
   every row of ``A`` sums to 2). Computed in row blocks, so memory is ``block × N`` rather than ``N × N``.
2. :func:`sinkhorn` — entropic OT with uniform marginals, λ = 5, stopping when ``Σ|β_old/β_new − 1| < tol``
   on a check iteration (0, 10, 20, …) or after ``max_iter`` iterations.
3. :func:`associate` — both OT directions (RGB → IR clusters and IR → RGB clusters) give the cross labels
   (argmax of each plan row); :func:`reassign_labels` moves each image to the fused centroid of its own
   modality with the largest dot product.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Association",
    "SinkhornResult",
    "associate",
    "beta_change",
    "cmfp",
    "fused_centroids",
    "ot_cross_labels",
    "reassign_labels",
    "sinkhorn",
]

logger = logging.getLogger(__name__)


def _propagate_rows(rows: Tensor, targets: Tensor, k: int) -> Tensor:
    """``knn_graph(rows · targetsᵀ, k) · targets`` for one row block: (b, D) × (M, D) → (b, D)."""
    from vireid.training.knn import knn_graph

    return knn_graph(rows @ targets.T, min(k, targets.shape[0])) @ targets


def cmfp(features_a: Tensor, features_b: Tensor, *, k: int, block_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Cross-modality feature propagation (CMFP, methods.md §A.4.1 step 1 and §A.6).

    Each row ``i`` of the joint set ``[F_a; F_b]`` becomes ``norm(Σ_j A_ij x_j)`` where ``A`` has the four
    blocks ``knn(F_x F_yᵀ)``: keep the entries ≥ the k-th largest of the row (self included in the
    homogeneous blocks), clamp at 0 and normalise the row to sum 1 (``vireid.training.knn.knn_graph``).
    ``k`` is capped at the size of each block's target set.

    Args:
        features_a: (N_a, D) float, L2-normalised (e.g. visible features, or test queries).
        features_b: (N_b, D) float, L2-normalised (e.g. infrared features, or the gallery).
        k: neighbours per block (30 SYSU, 8 RegDB).
        block_size: rows per block of the product (bounds memory at ``block_size × max(N_a, N_b)``).

    Returns:
        ``(F̃_a, F̃_b)``: (N_a, D) and (N_b, D) float32, L2-normalised, on the input device.

    Raises:
        ValueError: bad shapes, an empty set, or ``k < 1``.
    """
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            f"need (N_a, D) and (N_b, D), got {tuple(features_a.shape)}, {tuple(features_b.shape)}"
        )
    if features_a.shape[0] == 0 or features_b.shape[0] == 0:
        raise ValueError("cmfp needs at least one feature in each set")
    if k < 1 or block_size < 1:
        raise ValueError(f"k and block_size must be >= 1, got k={k}, block_size={block_size}")
    a, b = features_a.float(), features_b.float()
    out = []
    for source in (a, b):
        fused = [
            _propagate_rows(rows, a, k) + _propagate_rows(rows, b, k)
            for rows in torch.split(source, block_size)
        ]
        out.append(F.normalize(torch.cat(fused), dim=1))
    return out[0], out[1]


@dataclass(frozen=True)
class SinkhornResult:
    """Output of :func:`sinkhorn`.

    Attributes:
        plan: (N, K) float64 transport plan ``Q = diag(α) K diag(β)``.
        iterations: Sinkhorn iterations run.
        error: the last checked ``Σ|β_old/β_new − 1|``.
    """

    plan: Tensor
    iterations: int
    error: float


def beta_change(beta: Tensor, new_beta: Tensor) -> float:
    """Sinkhorn's stopping error ``Σ|β_old/β_new − 1|`` with NaN terms skipped (methods.md §A.4.1 step 3).

    The official loop sums with ``np.nansum``: a NaN term (``0/0`` where a kernel column underflowed) counts
    as 0, so the remaining terms decide whether the loop goes on, and an all-NaN error is 0 (the loop stops).
    A plain sum would turn one NaN term into a NaN error, which ends the loop at once.

    Args:
        beta: (K,) float64 column scaling before the iteration.
        new_beta: (K,) float64 column scaling after it.

    Returns:
        The error as a Python float (never NaN).
    """
    return float(torch.nansum((beta / new_beta - 1.0).abs()))


def sinkhorn(
    cost: Tensor,
    *,
    lam: float = 5.0,
    tol: float = 0.1,
    max_iter: int = 500,
    check_every: int = 10,
) -> SinkhornResult:
    """Entropic optimal transport with uniform marginals (Sinkhorn-Knopp, methods.md §A.4.1 step 3).

    ``K = exp(−λ·cost)``, ``a = 1/N``, ``b = 1/K``; start ``β = 1/K``; iterate ``α = a / (K β)``,
    ``β = b / (Kᵀ α)``. On iterations 0, ``check_every``, 2·``check_every``, … the error
    ``Σ|β_old/β_new − 1|`` is recomputed (NaN terms skipped as the official ``np.nansum``,
    :func:`beta_change`); the loop ends at the first check with error < ``tol``, or after
    ``max_iter`` iterations. Computed in float64 on the CPU.

    Args:
        cost: (N, K) float cost matrix (squared Euclidean distances to centroids).
        lam: λ, the inverse entropic temperature.
        tol: stopping tolerance.
        max_iter: iteration cap.
        check_every: error-check period.

    Returns:
        :class:`SinkhornResult` with the (N, K) plan (rows sum to 1/N, columns to 1/K at convergence).

    Raises:
        ValueError: an empty or non-2-D cost, non-finite costs, or bad parameters.
    """
    if cost.ndim != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"cost must be a non-empty (N, K) matrix, got shape {tuple(cost.shape)}")
    if lam <= 0 or tol <= 0 or max_iter < 1 or check_every < 1:
        raise ValueError("lam > 0, tol > 0, max_iter >= 1 and check_every >= 1 are required")
    c = cost.detach().to("cpu", torch.float64)
    if not torch.isfinite(c).all():
        raise ValueError("cost contains non-finite values")
    kernel = torch.exp(-lam * c)
    n, m = kernel.shape
    a, b = torch.full((n,), 1.0 / n, dtype=torch.float64), torch.full((m,), 1.0 / m, dtype=torch.float64)
    beta, alpha = b.clone(), a.clone()
    error, iterations = math.inf, 0
    while iterations < max_iter and error >= tol:
        alpha = a / (kernel @ beta)
        new_beta = b / (kernel.T @ alpha)
        if iterations % check_every == 0:
            error = beta_change(beta, new_beta)
        beta = new_beta
        iterations += 1
    return SinkhornResult(alpha[:, None] * kernel * beta[None, :], iterations, error)


def fused_centroids(features: Tensor, labels: Tensor, *, num_clusters: int | None = None) -> Tensor:
    """Per-cluster means (not normalised) of ``features`` in label order 0..K-1 (§A.4.1 step 2).

    Args:
        features: (N, D) float.
        labels: (N,) int64 in ``[0, K)`` (no outliers).
        num_clusters: K (default ``labels.max() + 1``).

    Returns:
        (K, D) float32 on the features' device; an empty cluster gets a zero row.
    """
    k = int(labels.max()) + 1 if num_clusters is None else num_clusters
    sums = torch.zeros(k, features.shape[1], dtype=torch.float32, device=features.device)
    sums.index_add_(0, labels, features.float())
    counts = torch.bincount(labels, minlength=k).clamp_min(1).to(sums)
    return sums / counts[:, None]


def ot_cross_labels(
    features: Tensor,
    other_centroids: Tensor,
    *,
    lam: float = 5.0,
    tol: float = 0.1,
    max_iter: int = 500,
    check_every: int = 10,
) -> tuple[Tensor, SinkhornResult]:
    """Cross labels in the other modality's label space: ``argmax_k Q[i, k]`` of the OT plan (§A.4.1).

    Args:
        features: (N, D) fused features of one modality.
        other_centroids: (K, D) fused centroids of the other modality.
        lam, tol, max_iter, check_every: :func:`sinkhorn` parameters.

    Returns:
        ``(labels, result)``: (N,) int64 CPU labels in ``[0, K)`` and the Sinkhorn result.
    """
    cost = torch.cdist(features.double(), other_centroids.double()).pow(2)
    result = sinkhorn(cost, lam=lam, tol=tol, max_iter=max_iter, check_every=check_every)
    return result.plan.argmax(dim=1), result


def reassign_labels(features: Tensor, centroids: Tensor) -> Tensor:
    """Intra-label re-assignment ``y(i) = argmax_k ⟨F̃_i, c̃_k⟩`` (dot product, unnormalised centroids).

    Args:
        features: (N, D) fused features. centroids: (K, D) fused centroids of the same modality.

    Returns:
        (N,) int64 CPU labels in ``[0, K)`` (a cluster may end up empty).
    """
    return (features.float() @ centroids.float().T).argmax(dim=1).cpu()


@dataclass(frozen=True)
class Association:
    """Result of :func:`associate`, aligned with the input rows (−1 for outliers).

    Attributes:
        labels_v / labels_r: (N_v,) / (N_r,) int64 re-assigned intra-modality labels.
        cross_v: (N_v,) int64 RGB → IR cross labels (IR label space).
        cross_r: (N_r,) int64 IR → RGB cross labels (RGB label space).
        iterations_v / iterations_r: Sinkhorn iterations of the two directions.
        changed_v / changed_r: fraction of non-outliers whose intra label changed on re-assignment.
    """

    labels_v: np.ndarray
    labels_r: np.ndarray
    cross_v: np.ndarray
    cross_r: np.ndarray
    iterations_v: int
    iterations_r: int
    changed_v: float
    changed_r: float


def _scatter(values: Tensor, keep: np.ndarray) -> np.ndarray:
    out = np.full(keep.shape[0], -1, dtype=np.int64)
    out[keep] = values.cpu().numpy()
    return out


def associate(
    features_v: Tensor,
    features_r: Tensor,
    *,
    labels_v: np.ndarray,
    labels_r: np.ndarray,
    k: int = 30,
    lam: float = 5.0,
    tol: float = 0.1,
    max_iter: int = 500,
    check_every: int = 10,
    block_size: int = 4096,
) -> Association:
    """The DAGL association of one epoch (methods.md §A.4.1 steps 1–5).

    Outliers (label −1) are left out of every step and get −1 in every output.

    Args:
        features_v: (N_v, D) L2-normalised visible features (``norm(f_g)``).
        features_r: (N_r, D) L2-normalised infrared features.
        labels_v: (N_v,) int DBSCAN labels, contiguous ``0..K_v-1``, −1 = outlier.
        labels_r: (N_r,) int DBSCAN labels of the infrared set.
        k: CMFP neighbours (30 SYSU, 8 RegDB).
        lam, tol, max_iter, check_every: :func:`sinkhorn` parameters.
        block_size: CMFP row block.

    Returns:
        :class:`Association`.

    Raises:
        ValueError: shape mismatch, or a modality without any cluster.
    """
    y_v, y_r = np.asarray(labels_v, dtype=np.int64), np.asarray(labels_r, dtype=np.int64)
    if y_v.shape != (features_v.shape[0],) or y_r.shape != (features_r.shape[0],):
        raise ValueError("labels must have one entry per feature row in each modality")
    keep_v, keep_r = y_v >= 0, y_r >= 0
    if not keep_v.any() or not keep_r.any():
        raise ValueError("association needs at least one cluster in each modality")
    device = features_v.device
    lab_v = torch.from_numpy(y_v[keep_v]).to(device)
    lab_r = torch.from_numpy(y_r[keep_r]).to(device)
    fused_v, fused_r = cmfp(
        features_v[torch.from_numpy(keep_v).to(device)],
        features_r[torch.from_numpy(keep_r).to(features_r.device)].to(device),
        k=k,
        block_size=block_size,
    )
    cent_v, cent_r = fused_centroids(fused_v, lab_v), fused_centroids(fused_r, lab_r)
    cross_v, res_v = ot_cross_labels(
        fused_v, cent_r, lam=lam, tol=tol, max_iter=max_iter, check_every=check_every
    )
    cross_r, res_r = ot_cross_labels(
        fused_r, cent_v, lam=lam, tol=tol, max_iter=max_iter, check_every=check_every
    )
    new_v, new_r = reassign_labels(fused_v, cent_v), reassign_labels(fused_r, cent_r)
    result = Association(
        labels_v=_scatter(new_v, keep_v),
        labels_r=_scatter(new_r, keep_r),
        cross_v=_scatter(cross_v, keep_v),
        cross_r=_scatter(cross_r, keep_r),
        iterations_v=res_v.iterations,
        iterations_r=res_r.iterations,
        changed_v=float((new_v != lab_v.cpu()).float().mean()),
        changed_r=float((new_r != lab_r.cpu()).float().mean()),
    )
    logger.info(
        "DAGL association: Sinkhorn %d / %d iterations; re-assignment changed %.1f%% / %.1f%% labels",
        result.iterations_v,
        result.iterations_r,
        100 * result.changed_v,
        100 * result.changed_r,
    )
    return result
