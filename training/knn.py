"""Row-wise neighbour graphs and masks used by the association and neighbour losses.

* :func:`knn_graph` — SALCR CMFP affinity blocks (methods.md §A.4.1).
* :func:`topk_mask` — SALCR GPCR strict top-k masks (methods.md §A.4.3, §D.8).
* :func:`rel_max_mask` — SDCL CNL "> 0.9·row max" masks (methods.md §B.4.1, §D.10).

All functions take and return torch tensors on the input's device and work row-wise on 2-D inputs.
"""

from __future__ import annotations

import torch

__all__ = ["knn_graph", "rel_max_mask", "topk_mask"]


def _check_matrix(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a 2-D floating point tensor")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {tuple(x.shape)}")


def knn_graph(similarity: torch.Tensor, k: int) -> torch.Tensor:
    """Row-normalised kNN affinity (methods.md §A.4.1, CMFP ``knn``).

    Per row: keep the entries ``>=`` the k-th largest value (so ties at the k-th value are all kept, and the
    self-match is included in homogeneous blocks), set the rest to 0, clamp at 0, then divide by the row sum.
    A row whose kept entries are all ``<= 0`` stays all-zero instead of dividing by zero.

    Args:
        similarity: (N, M) float similarities, e.g. ``F_v·F_rᵀ``.
        k: Neighbours per row, ``1 <= k <= M``.

    Returns:
        (N, M) tensor of the input dtype; each row sums to 1 (or is all zero).

    Raises:
        ValueError: for a non-2-D or non-float input, or ``k`` out of range.
    """
    _check_matrix(similarity, "similarity")
    if not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"k must be in [1, {similarity.shape[1]}], got {k}")
    kth = similarity.topk(k, dim=1).values[:, -1:]
    kept = torch.where(similarity >= kth, similarity, torch.zeros_like(similarity)).clamp_min(0)
    total = kept.sum(dim=1, keepdim=True)
    return kept / torch.where(total > 0, total, torch.ones_like(total))


def topk_mask(p: torch.Tensor, k: int) -> torch.Tensor:
    """Strict top-k mask (methods.md §A.4.3): ``p > (k+1)-th largest value of the row``.

    Exactly k entries per row when there are no ties at the boundary; ties at the (k+1)-th value are all
    excluded.

    Args:
        p: (N, M) float scores, e.g. softmax probabilities against an instance memory.
        k: Entries to keep, ``1 <= k < M``.

    Returns:
        (N, M) bool mask.

    Raises:
        ValueError: for a non-2-D or non-float input, or ``k`` out of range.
    """
    _check_matrix(p, "p")
    if not 1 <= k < p.shape[1]:
        raise ValueError(f"k must be in [1, {p.shape[1] - 1}] (the (k+1)-th value must exist), got {k}")
    boundary = p.topk(k + 1, dim=1).values[:, -1:]
    return p > boundary


def rel_max_mask(s: torch.Tensor, ratio: float = 0.9) -> torch.Tensor:
    """Relative-to-max mask (methods.md §B.4.1): ``s > ratio·max(s_row)``.

    Args:
        s: (N, M) float similarities (SDCL: instance-memory similarities, max ≈ 1 for self rows).
        ratio: Fraction of the row maximum, in (0, 1].

    Returns:
        (N, M) bool mask. Note that for a row with a non-positive maximum the rule still applies literally.

    Raises:
        ValueError: for a non-2-D or non-float input, or ``ratio`` outside (0, 1].
    """
    _check_matrix(s, "s")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return s > ratio * s.max(dim=1, keepdim=True).values
