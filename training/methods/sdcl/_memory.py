"""SDCL memory banks: cluster memories (methods.md §0.4) and EMA instance memories (§B.3 item 3).

Both update explicitly under ``no_grad`` (house-style §17), per sample and in batch order, with
re-normalisation after each sample: ``m[y] ← norm(μ·m[y] + (1 − μ)·x)``. Rows of different slots are
independent, so the sequential rule is run in rounds (the r-th occurrence of every slot at once), which
gives exactly the per-sample result with at most ``max occurrences`` vectorised steps.

* :class:`ClusterMemory`: ``μ`` = the cluster momentum (0.1), ``x = norm(f)``; ``loss = CE(norm(f)·Mᵀ/τ, y)``.
* :class:`InstanceMemory`: ``μ`` = 0.9, ``x = f`` the **raw** BN feature (§D item 1); one row per training
  image, outliers included; ``labels`` keeps the DBSCAN labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ClusterMemory", "InstanceMemory", "sequential_momentum_update"]


def _occurrence_rank(slots: Tensor) -> Tensor:
    """(B,) int64: how many earlier rows of the batch hit the same slot (0 for the first occurrence)."""
    order = torch.sort(slots, stable=True).indices
    sorted_slots = slots[order]
    starts = torch.ones_like(sorted_slots, dtype=torch.bool)
    starts[1:] = sorted_slots[1:] != sorted_slots[:-1]
    positions = torch.arange(slots.numel(), device=slots.device)
    group_start = torch.cummax(torch.where(starts, positions, torch.zeros_like(positions)), dim=0).values
    rank = torch.empty_like(slots)
    rank[order] = positions - group_start
    return rank


@torch.no_grad()
def sequential_momentum_update(bank: Tensor, values: Tensor, slots: Tensor, *, momentum: float) -> None:
    """In place, row by row in order: ``bank[s_b] ← norm(momentum·bank[s_b] + (1 − momentum)·values[b])``.

    Args:
        bank: (M, D) float32 memory.
        values: (B, D) float rows (already normalised or raw, as the caller's rule says).
        slots: (B,) int64 row of ``bank`` each value goes to.
        momentum: weight of the old row.

    Raises:
        ValueError: shapes disagree or a slot is out of range.
    """
    if values.ndim != 2 or values.shape[1] != bank.shape[1] or slots.shape != (values.shape[0],):
        raise ValueError(
            f"need values (B, {bank.shape[1]}) and slots (B,), got {values.shape}, {slots.shape}"
        )
    if slots.numel() == 0:
        return
    slots = slots.to(bank.device, torch.int64)
    if slots.min() < 0 or slots.max() >= bank.shape[0]:
        raise ValueError(f"slot out of range [0, {bank.shape[0]})")
    values = values.to(bank.device, bank.dtype)
    rank = _occurrence_rank(slots)
    for r in range(int(rank.max()) + 1):
        rows = rank == r  # each slot at most once in this round
        s = slots[rows]
        bank[s] = F.normalize(momentum * bank[s] + (1.0 - momentum) * values[rows], dim=1)


class ClusterMemory(nn.Module):
    """Unit-norm cluster centroids with the CM op (methods.md §0.4, explicit update).

    Args:
        centroids: (K, D) float centroids (normalised here).
        temperature: τ (0.05).
        momentum: cluster momentum μ (0.1 = 90 % of the new sample).
    """

    features: Tensor

    def __init__(self, centroids: Tensor, *, temperature: float = 0.05, momentum: float = 0.1) -> None:
        super().__init__()
        if centroids.ndim != 2 or centroids.shape[0] == 0:
            raise ValueError(f"centroids must be a non-empty (K, D) matrix, got {tuple(centroids.shape)}")
        self.temperature = temperature
        self.momentum = momentum
        self.register_buffer("features", F.normalize(centroids.detach().float(), dim=1).clone())

    def loss(self, features: Tensor, targets: Tensor) -> Tensor:
        """``CE(norm(f)·Mᵀ/τ, y)``; f (B, D) live features, y (B,) int64 in [0, K). Scalar."""
        logits = F.normalize(features.float(), dim=1) @ self.features.T / self.temperature
        return F.cross_entropy(logits, targets.to(logits.device))

    @torch.no_grad()
    def update(self, features: Tensor, targets: Tensor) -> None:
        """Sequential momentum update with ``norm(f)`` rows in batch order (after the backward)."""
        sequential_momentum_update(
            self.features, F.normalize(features.detach().float(), dim=1), targets, momentum=self.momentum
        )


class InstanceMemory(nn.Module):
    """One unit-norm row per training image (outliers included), EMA-updated with raw features (§B.3 item 3).

    Args:
        features: (N, D) float features of every image in record order (normalised here).
        labels: (N,) int DBSCAN labels (−1 = outlier), kept for reference.
        momentum: μ of ``I[n] ← norm(μ·I[n] + (1 − μ)·f)`` (0.9).
    """

    features: Tensor
    labels: Tensor

    def __init__(self, features: Tensor, labels: np.ndarray | Tensor, *, momentum: float = 0.9) -> None:
        super().__init__()
        if features.ndim != 2:
            raise ValueError(f"features must be (N, D), got {tuple(features.shape)}")
        y = torch.as_tensor(
            np.asarray(labels) if not isinstance(labels, Tensor) else labels, dtype=torch.int64
        )
        if y.shape != (features.shape[0],):
            raise ValueError(f"labels must be ({features.shape[0]},), got {tuple(y.shape)}")
        self.momentum = momentum
        self.register_buffer("features", F.normalize(features.detach().float(), dim=1).clone())
        self.register_buffer("labels", y.clone())

    @torch.no_grad()
    def update(self, features: Tensor, indexes: Tensor) -> None:
        """Sequential EMA with the **raw** features (B, D) at dataset ``indexes`` (B,), in batch order."""
        sequential_momentum_update(self.features, features.detach().float(), indexes, momentum=self.momentum)
