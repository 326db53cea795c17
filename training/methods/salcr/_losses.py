"""SALCR stage-2 losses: DAGL global loss, FGSAL part losses, GPCR refinement (methods.md §A.4.1–§A.4.4).

The batch is three blocks ``[V; A; R]`` of n rows (RGB plain view, RGB augmented view, IR), row j of every
block being one pseudo-positive triple (the stage-2 sampler guarantees it). The model's ``forward_train``
gives ``f_g`` (3n, C) and ``f_pg`` / ``f_pg1`` / ``f_pg2`` (3n, (P+1)·C) laid out [part0 | … | global],
where the prototypes of rows ``[V; A; R]`` query the maps ``[V; A; R]`` (own), ``[R; R; V]`` and
``[A; V; A]``. In "x→y" notation (x's prototypes attend over y's map):

* ``f_pg``:  V→V, A→A, R→R
* ``f_pg1``: V→R, A→R, R→V
* ``f_pg2``: V→A, A→V, R→A

Memory updates are not done here: the functions return the rows and targets each memory must be updated
with (the method applies them after the backward, §0.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PartBlocks",
    "dagl_loss",
    "dagl_targets",
    "fgsal_loss",
    "gpcr_global_masks",
    "gpcr_part_masks",
    "masked_nll",
    "normalized_logits",
    "part_blocks",
]


def _blocks(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split (3n, ...) rows into the V, A and R blocks."""
    if x.shape[0] % 3:
        raise ValueError(f"a [V; A; R] batch needs a multiple of 3 rows, got {x.shape[0]}")
    n = x.shape[0] // 3
    return x[:n], x[n : 2 * n], x[2 * n :]


def _topk(scores: Tensor, k: int) -> Tensor:
    """Strict top-k mask (``vireid.training.knn.topk_mask``); every entry when the row has ≤ k entries."""
    from vireid.training.knn import topk_mask

    if k >= scores.shape[1]:
        return torch.ones_like(scores, dtype=torch.bool)
    return topk_mask(scores, k).bool()


def dagl_targets(*, y_v: Tensor, cross_v: Tensor, y_r: Tensor, cross_r: Tensor) -> tuple[Tensor, Tensor]:
    """Labels of the 3n rows in both label spaces (§A.4.1 "global learning loss").

    Args:
        y_v: (n,) re-assigned RGB labels of the visible images (RGB space).
        cross_v: (n,) RGB → IR cross labels (IR space).
        y_r: (n,) re-assigned IR labels (IR space).
        cross_r: (n,) IR → RGB cross labels (RGB space).

    Returns:
        ``(rgb_space, ir_space)``: (3n,) ``[y_v; y_v; ŷ_r]`` and ``[ŷ_v; ŷ_v; y_r]``.
    """
    return torch.cat([y_v, y_v, cross_r]), torch.cat([cross_v, cross_v, y_r])


def dagl_loss(
    f_g: Tensor, *, rgb_space: Tensor, ir_space: Tensor, memory_v: object, memory_r: object
) -> Tensor:
    """``L_dagl = CE(m_v(f), RGB-space labels) + CE(m_r(f), IR-space labels)`` (§A.4.1, branch 'dual').

    Args:
        f_g: (3n, C) global BN features of ``[V; A; R]`` (not normalised; the memory normalises).
        rgb_space / ir_space: (3n,) int64 targets from :func:`dagl_targets`.
        memory_v / memory_r: ``ClusterMemory`` of the RGB (K_v) and IR (K_r) clusters.

    Returns:
        Scalar loss.
    """
    loss: Tensor = memory_v.loss(f_g, rgb_space) + memory_r.loss(f_g, ir_space)  # type: ignore[attr-defined]
    return loss


@dataclass(frozen=True)
class PartBlocks:
    """Part-k features of one step, grouped as FGSAL and GPCR need them.

    Attributes:
        h_v: (6n, C) RGB-prototype rows ``[V→V, A→A, V→R, A→R*, V→A, A→V]`` (A→R* = A→V under parity).
        h_r: (3n, C) IR-prototype rows ``[R→R, R→V, R→A]``.
        by_map: (9n, C) rows grouped by source map ``[map V: (V,A,R)→V | map A: … | map R: …]``.
    """

    h_v: Tensor
    h_r: Tensor
    by_map: Tensor


def part_blocks(outputs: Mapping[str, Tensor], *, part: int, dim: int, a_to_r: str) -> PartBlocks:
    """Slice part ``part`` of the three 8192-d training vectors into FGSAL / GPCR row groups (§A.4.2–3).

    Args:
        outputs: ``forward_train`` outputs with ``f_pg`` / ``f_pg1`` / ``f_pg2``, each (3n, (P+1)·C): own
            maps, maps [R; R; V], maps [A; V; A].
        part: k in ``[0, P)``; columns ``[k·C, (k+1)·C)``.
        dim: C, the per-part width (2048 for the full model).
        a_to_r: ``"parity"`` puts A→V in the A→R slot (official slicing); ``"intent"`` uses A→R.

    Returns:
        :class:`PartBlocks`.

    Raises:
        ValueError: ``part`` out of range or an unknown ``a_to_r``.
    """
    f_pg, f_pg1, f_pg2 = (outputs[key].float() for key in ("f_pg", "f_pg1", "f_pg2"))
    if a_to_r not in ("parity", "intent"):
        raise ValueError(f"a_to_r must be 'parity' or 'intent', got {a_to_r!r}")
    if not 0 <= part < f_pg.shape[1] // dim - 1:
        raise ValueError(f"part {part} out of range for a {f_pg.shape[1]}-d vector of {dim}-d parts")
    cols = slice(part * dim, (part + 1) * dim)
    vv, aa, rr = _blocks(f_pg[:, cols])
    vr, ar, rv = _blocks(f_pg1[:, cols])
    va, av, ra = _blocks(f_pg2[:, cols])
    a_slot = av if a_to_r == "parity" else ar
    h_v = torch.cat([vv, aa, vr, a_slot, va, av])
    h_r = torch.cat([rr, rv, ra])
    by_map = torch.cat([vv, av, rv, va, aa, ra, vr, a_slot, rr])
    return PartBlocks(h_v, h_r, by_map)


def fgsal_loss(
    parts: Sequence[PartBlocks],
    *,
    y_v: Tensor,
    cross_v: Tensor,
    y_r: Tensor,
    cross_r: Tensor,
    memories: Sequence[dict[str, object]],
) -> tuple[Tensor, list[tuple[object, Tensor, Tensor]]]:
    """FGSAL part loss (§A.4.2), averaged over the P parts::

        L = (1/P) Σ_k [CE(m_vp(H_v), y_v) + CE(m_rp(H_v), ŷ_v) + CE(m_vpa(H_r), ŷ_r) + CE(m_rpa(H_r), y_r)]

    Args:
        parts: P :class:`PartBlocks`, one per stripe.
        y_v, cross_v, y_r, cross_r: (n,) int64 labels as in :func:`dagl_targets`.
        memories: P dicts with the ``ClusterMemory`` entries ``"vp"``, ``"rp"`` (updated by H_v) and
            ``"vpa"``, ``"rpa"`` (updated by H_r).

    Returns:
        ``(loss, updates)``: the scalar loss and the ``(memory, rows, targets)`` updates to apply after the
        backward, in the order of the terms.
    """
    total = torch.zeros((), device=y_v.device)
    updates: list[tuple[object, Tensor, Tensor]] = []
    for blocks, mem in zip(parts, memories, strict=True):
        terms = (
            (mem["vp"], blocks.h_v, y_v.repeat(6)),
            (mem["rp"], blocks.h_v, cross_v.repeat(6)),
            (mem["vpa"], blocks.h_r, cross_r.repeat(3)),
            (mem["rpa"], blocks.h_r, y_r.repeat(3)),
        )
        for memory, rows, targets in terms:
            total = total + memory.loss(rows, targets)  # type: ignore[attr-defined]
            updates.append((memory, rows, targets))
    return total / len(parts), updates


def masked_nll(logits: Tensor, mask: Tensor) -> Tensor:
    """``mean over rows with a non-empty mask of −log Σ_{n∈mask} softmax(logits)_n`` (§A.4.3).

    Computed as ``logsumexp(all) − logsumexp(masked)``, which equals the probability form.

    Args:
        logits: (B, N) float. mask: (B, N) bool.

    Returns:
        Scalar; 0 (still attached to ``logits``) when no row has a positive.
    """
    valid = mask.any(dim=1)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    lg, m = logits[valid], mask[valid]
    positive = lg.masked_fill(~m, float("-inf")).logsumexp(dim=1)
    return (lg.logsumexp(dim=1) - positive).mean()


def gpcr_global_masks(probs_or_logits: Tensor, *, k: int) -> tuple[Tensor, Tensor]:
    """Top-k masks of the 3n global rows and their intersection over each triple (§A.4.3).

    Args:
        probs_or_logits: (3n, N) scores of ``[V; A; R]`` against an instance memory (top-k is order-based,
            so logits and softmax probabilities give the same mask).
        k: reliable positives per row (strictly greater than the (k+1)-th largest).

    Returns:
        ``(topk, omega)``: (3n, N) bool masks — per row, and the triple intersection tiled to all 3 rows.
    """
    top = _topk(probs_or_logits, k)
    v, a, r = _blocks(top)
    omega = v & a & r
    return top, torch.cat([omega, omega, omega])


def gpcr_part_masks(part_scores: Tensor, global_topk: Tensor, *, k: int) -> Tensor:
    """Mutual part-correction masks of the 9n by-map rows (§A.4.3 "part positives").

    Row (prototype x, map y, j) keeps ``T_{x_j} ∧ (U_{(x,y',j)} ∨ U_{(x,y'',j)})``: the global top-k of
    image x_j (before the triple intersection) and the union of the part top-k of the same prototype over
    the two other maps (rolling the 9n rows by 3n and 6n).

    Args:
        part_scores: (9n, N) scores of the by-map rows (:class:`PartBlocks` ``by_map``) against a part
            instance memory.
        global_topk: (3n, N) bool global top-k masks of ``[V; A; R]`` (first output of
            :func:`gpcr_global_masks`).
        k: reliable positives per row.

    Returns:
        (9n, N) bool mask.
    """
    rows = part_scores.shape[0]
    if rows != 3 * global_topk.shape[0]:
        raise ValueError(f"need 9n part rows for 3n global rows, got {rows} and {global_topk.shape[0]}")
    u = _topk(part_scores, k)
    third = rows // 3
    union = torch.roll(u, third, dims=0) | torch.roll(u, 2 * third, dims=0)
    return torch.cat([global_topk] * 3) & union


def normalized_logits(features: Tensor, bank: Tensor, *, temperature: float) -> Tensor:
    """``norm(features) · bankᵀ / τ`` in float32 (bank rows already unit)."""
    return F.normalize(features.float(), dim=1) @ bank.float().T / temperature
