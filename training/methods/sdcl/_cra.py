"""CRA: Collaborative Ranking Association (methods.md §B.4.2, §D item 11).

Visible (RGB) images get labels in the **infrared** label space:

1. For visible image i, ``Nd(i)`` / ``Ns(i)`` = its top-K infrared neighbours by deep / shallow cosine
   similarity. ``score(l) = #{m : ℓ_r(Ns(i)_m) = ℓ_r(Nd(i)_l)}``; ``ŷ(i) = ℓ_r(Nd(i)_{l*})`` with ``l*`` the
   first maximum of ``score`` (the deep-ranked label the shallow ranking agrees with most).
2. Smoothing: ``W = D_v D_vᵀ + S_v S_vᵀ``; ``N5(i)`` = top-``vote`` of row i (self included); one-hot votes
   over ``K_r + 1`` classes with class 0 = outlier; ``ỹ(i) = argmax_c Σ_{j∈N5(i)} onehot(ŷ(j) + 1)_c − 1``
   (first maximum, so ties go to the outlier class or the lower label).
3. Trained visible images: ``ỹ(i) ≠ −1`` and visible DBSCAN label ``≠ −1``.

Rankings use a *stable* descending sort: among equal similarities the lower gallery index ranks first
(the official code calls ``torch.topk``, whose order among ties is unspecified). Likewise ``l*`` and the
smoothing vote take the *first* maximum where the official ``topk(·, 1)`` picks an unspecified one among
tied votes: a deliberate, deterministic choice; on inputs with tied votes 2–5 % of the visible labels can
differ from an official run (docs/sdcl.md "Deviations").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["CRAResult", "collaborative_ranking_association", "cra_agreement", "stable_topk"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CRAResult:
    """Output of :func:`collaborative_ranking_association`.

    Attributes:
        ranked: (N_v,) int64 step-1 labels ŷ (infrared label space, −1 = an infrared outlier won).
        labels: (N_v,) int64 step-2 labels ỹ (−1 = outlier class).
        train_labels: (N_v,) int64 step-3 labels: ỹ where ỹ ≠ −1 and the visible DBSCAN label ≠ −1, else −1.
        agreement: mean over visible images of ``max_l score(l) / K`` (label-free agreement of the rankings).
    """

    ranked: np.ndarray
    labels: np.ndarray
    train_labels: np.ndarray
    agreement: float


def stable_topk(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest entries of each row, descending; ties keep the lower index first.

    Args:
        scores: (B, N) float.
        k: 1 ≤ k ≤ N.

    Returns:
        (B, k) int64.
    """
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def _check(name: str, x: Tensor, dim: int | None = None) -> None:
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise ValueError(f"{name} must be (N, {dim or 'D'}), got {tuple(x.shape)}")


def _ranked_labels(
    deep_v: Tensor,
    deep_r: Tensor,
    shallow_v: Tensor,
    shallow_r: Tensor,
    ir_labels: Tensor,
    *,
    k: int,
    block: int,
) -> tuple[Tensor, Tensor]:
    """Step 1: ŷ (N_v,) int64 and the winning score (N_v,) int64, in row blocks of ``block``."""
    ranked, best = [], []
    for start in range(0, deep_v.shape[0], block):
        stop = start + block
        lab_d = ir_labels[stable_topk(deep_v[start:stop] @ deep_r.T, k)]  # (b, K)
        lab_s = ir_labels[stable_topk(shallow_v[start:stop] @ shallow_r.T, k)]  # (b, K)
        score = (lab_d.unsqueeze(2) == lab_s.unsqueeze(1)).sum(dim=2)  # score[i, l]
        top = torch.argmax(score, dim=1, keepdim=True)  # first maximum
        ranked.append(lab_d.gather(1, top).squeeze(1))
        best.append(score.gather(1, top).squeeze(1))
    return torch.cat(ranked), torch.cat(best)


def _smoothed_labels(deep_v: Tensor, shallow_v: Tensor, ranked: Tensor, *, vote: int, block: int) -> Tensor:
    """Step 2: majority vote of ŷ over the ``vote`` nearest visible images (outlier = class 0)."""
    num_classes = int(ranked.max().item()) + 2 if ranked.numel() else 1
    shifted = ranked + 1
    out = []
    for start in range(0, deep_v.shape[0], block):
        stop = start + block
        w = deep_v[start:stop] @ deep_v.T + shallow_v[start:stop] @ shallow_v.T
        votes = shifted[stable_topk(w, vote)]  # (b, vote)
        counts = torch.zeros(votes.shape[0], num_classes, dtype=torch.int64, device=votes.device)
        counts.scatter_add_(1, votes, torch.ones_like(votes))
        out.append(torch.argmax(counts, dim=1) - 1)  # first maximum
    return torch.cat(out)


def collaborative_ranking_association(
    deep_v: Tensor,
    deep_r: Tensor,
    shallow_v: Tensor,
    shallow_r: Tensor,
    *,
    ir_labels: np.ndarray,
    rgb_labels: np.ndarray,
    topk: int = 20,
    vote: int = 5,
    block_rows: int = 2048,
) -> CRAResult:
    """Label visible images in the infrared label space (methods.md §B.4.2 steps 1–3).

    Args:
        deep_v: (N_v, D) float32 L2-normalised deep features of the visible images.
        deep_r: (N_r, D) float32 L2-normalised deep features of the infrared images.
        shallow_v: (N_v, D') float32 L2-normalised shallow features, visible.
        shallow_r: (N_r, D') float32 L2-normalised shallow features, infrared.
        ir_labels: (N_r,) int infrared DBSCAN labels in ``[0, K_r)``, −1 = outlier.
        rgb_labels: (N_v,) int visible DBSCAN labels (only their −1 entries matter, step 3).
        topk: K of the deep / shallow rankings (20 SYSU, 10 RegDB); capped at N_r.
        vote: neighbours of the smoothing vote, self included (5); capped at N_v.
        block_rows: rows per block of the (N_v, N_r) and (N_v, N_v) similarities (memory bound only).

    Returns:
        The :class:`CRAResult`.

    Raises:
        ValueError: shapes that disagree, empty inputs, or labels below −1.
    """
    for name, x in (
        ("deep_v", deep_v),
        ("deep_r", deep_r),
        ("shallow_v", shallow_v),
        ("shallow_r", shallow_r),
    ):
        _check(name, x)
    n_v, n_r = deep_v.shape[0], deep_r.shape[0]
    if n_v == 0 or n_r == 0:
        raise ValueError("CRA needs at least one visible and one infrared image")
    if shallow_v.shape[0] != n_v or shallow_r.shape[0] != n_r or shallow_v.shape[1] != shallow_r.shape[1]:
        raise ValueError("deep and shallow features must describe the same images with matching widths")
    if deep_v.shape[1] != deep_r.shape[1]:
        raise ValueError(f"deep widths differ: {deep_v.shape[1]} vs {deep_r.shape[1]}")
    y_r = torch.as_tensor(np.asarray(ir_labels), dtype=torch.int64, device=deep_v.device)
    y_v = np.asarray(rgb_labels, dtype=np.int64)
    if y_r.shape != (n_r,) or y_v.shape != (n_v,):
        raise ValueError(
            f"need ir_labels ({n_r},) and rgb_labels ({n_v},), got {tuple(y_r.shape)}, {y_v.shape}"
        )
    if (y_r < -1).any() or (y_v < -1).any():
        raise ValueError("labels must be >= -1")
    k, v = min(topk, n_r), min(vote, n_v)
    if k < topk or v < vote:
        logger.info("CRA: top-K %d -> %d, vote %d -> %d (small data)", topk, k, vote, v)
    dv, dr, sv, sr = (x.float() for x in (deep_v, deep_r, shallow_v, shallow_r))
    with torch.no_grad():
        ranked, best = _ranked_labels(dv, dr, sv, sr, y_r, k=k, block=block_rows)
        smoothed = _smoothed_labels(dv, sv, ranked, vote=v, block=block_rows)
    labels = smoothed.cpu().numpy().astype(np.int64)
    train = np.where((labels >= 0) & (y_v >= 0), labels, -1).astype(np.int64)
    return CRAResult(
        ranked=ranked.cpu().numpy().astype(np.int64),
        labels=labels,
        train_labels=train,
        agreement=float(best.float().mean().item()) / k,
    )


def cra_agreement(
    deep_v: Tensor,
    deep_r: Tensor,
    shallow_v: Tensor,
    shallow_r: Tensor,
    *,
    ir_labels: np.ndarray,
    topk: int = 20,
) -> float:
    """Label-free model-selection score: CRA step-1 agreement (mean of ``max_l score(l) / K``) in [0, 1].

    How strongly the shallow infrared ranking of each visible image confirms the label of a deep-ranked
    neighbour; used by the ``reload="best_unsupervised"`` stage option. Arguments as in
    :func:`collaborative_ranking_association`.
    """
    y_r = torch.as_tensor(np.asarray(ir_labels), dtype=torch.int64, device=deep_v.device)
    k = min(topk, deep_r.shape[0])
    with torch.no_grad():
        _, best = _ranked_labels(deep_v, deep_r, shallow_v, shallow_r, y_r, k=k, block=2048)
    return float(best.float().mean().item()) / k
