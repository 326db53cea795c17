"""Cluster and instance memories with explicit momentum updates (methods.md §0.4, §B.3, §D.1).

The official code hides the cluster-memory update inside the autograd backward of a custom op. Here the
update is an explicit :meth:`ClusterMemory.update` under ``no_grad`` (house-style §17); the logits/loss use
the memory **before** the update, exactly like the backward formulation (the parity test proves it).

Momentum convention (cluster-contrast): ``c ← norm(m·c + (1 − m)·x)``, so ``m = 0.1`` keeps 10 % of the
old prototype. Updates are per sample, sequential, re-normalised after each sample.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClusterMemory", "InstanceMemory"]

logger = logging.getLogger(__name__)

UpdateOrder = Literal["sequential", "random"]


def _check_bank(features: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(features)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(
            f"{name} features must be a non-empty (K, D) tensor, got shape {tuple(features.shape)}"
        )
    if not features.is_floating_point() or not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} features must be finite floating point values")
    return F.normalize(features.detach().to(torch.float32), dim=1).clone()


def _occurrence(keys: torch.Tensor) -> torch.Tensor:
    """(B,) int64: how many earlier positions hold the same key (0 for a first occurrence)."""
    order = torch.sort(keys, stable=True).indices
    sorted_keys = keys[order]
    new_group = torch.ones_like(sorted_keys, dtype=torch.bool)
    new_group[1:] = sorted_keys[1:] != sorted_keys[:-1]
    positions = torch.arange(keys.numel(), device=keys.device)
    group_start = torch.cummax(torch.where(new_group, positions, 0), dim=0).values
    occ = torch.empty_like(positions)
    occ[order] = positions - group_start
    return occ


@torch.no_grad()
def _sequential_update(
    bank: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, *, keep: float, normalize_input: bool
) -> None:
    """In place: for each sample in order, ``bank[r] ← norm(keep·bank[r] + (1 − keep)·x)``.

    Samples hitting different rows are independent, so the loop runs over the occurrence rank (the largest
    number of samples sharing a row), not over the batch; the result equals the per-sample loop exactly.
    """
    x = x.detach().to(torch.float32)
    if normalize_input:
        x = F.normalize(x, dim=1)
    occ = _occurrence(rows)
    for step in range(int(occ.max()) + 1 if occ.numel() else 0):
        sel = occ == step
        r = rows[sel]
        bank[r] = F.normalize(keep * bank[r] + (1.0 - keep) * x[sel], dim=1)


class ClusterMemory(nn.Module):
    """Unit-norm cluster prototypes ``C`` (K, D) with the cluster-contrast loss (methods.md §0.4).

    Args:
        features: (K, D) float initial prototypes, e.g.
            :func:`~vireid.training.pseudo_labels.cluster_centroids`;
            stored L2-normalised as a float32 buffer (the device follows ``.to()``).
        temperature: Softmax temperature ``τ`` (0.05 in both methods).
        momentum: ``m`` in ``c ← norm(m·c + (1 − m)·norm(f))`` (0.1 = 90 % new sample).

    Raises:
        ValueError: for an empty or non-finite bank, ``temperature <= 0`` or ``momentum`` outside [0, 1].
    """

    features: torch.Tensor

    def __init__(self, features: torch.Tensor, *, temperature: float = 0.05, momentum: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.register_buffer("features", _check_bank(features, "cluster"))

    @property
    def num_clusters(self) -> int:
        return int(self.features.shape[0])

    def _check_batch(self, f: torch.Tensor) -> None:
        if f.ndim != 2 or f.shape[1] != self.features.shape[1]:
            raise ValueError(f"expected features (B, {self.features.shape[1]}), got {tuple(f.shape)}")

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """``norm(f)·Cᵀ/τ`` in float32; gradients flow to ``f`` only (the memory is a buffer).

        Args:
            f: (B, D) features of any float dtype (bf16/fp16 under autocast are upcast).

        Returns:
            (B, K) float32 logits.
        """
        self._check_batch(f)
        with torch.autocast(device_type=f.device.type, enabled=False):
            return F.normalize(f.float(), dim=1) @ self.features.float().t() / self.temperature

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`logits`."""
        return self.logits(f)

    def loss(self, f: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of :meth:`logits` (uses the memory as it is now, i.e. before :meth:`update`).

        Args:
            f: (B, D) features.
            targets: (B,) int64 cluster ids, or (B, K) float probability targets (one-hot or soft, as SALCR's
                DAGL passes them).

        Returns:
            Scalar float32 mean loss.
        """
        logits = self.logits(f)
        if targets.is_floating_point():
            if targets.shape != logits.shape:
                raise ValueError(
                    f"probability targets must be {tuple(logits.shape)}, got {tuple(targets.shape)}"
                )
            return F.cross_entropy(logits, targets.float())
        self._check_targets(targets, f.shape[0])
        return F.cross_entropy(logits, targets)

    def _check_targets(self, targets: torch.Tensor, batch: int) -> None:
        if targets.shape != (batch,):
            raise ValueError(f"targets must be ({batch},), got {tuple(targets.shape)}")
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_clusters):
            raise ValueError(
                f"targets must be in [0, {self.num_clusters}), got [{targets.min()}, {targets.max()}]"
            )

    @torch.no_grad()
    def update(
        self,
        f: torch.Tensor,
        targets: torch.Tensor,
        *,
        order: UpdateOrder = "sequential",
        generator: torch.Generator | None = None,
    ) -> None:
        """Momentum update, per sample in order: ``C[y] ← norm(m·C[y] + (1 − m)·norm(f))`` (methods.md §0.4).

        Call it after computing the loss (the loss must see the pre-update memory).

        Args:
            f: (B, D) features (detached; computed in float32).
            targets: (B,) int64 cluster ids, or (B, K) probability targets (the argmax cluster is updated).
            order: ``"sequential"`` (batch order) or ``"random"`` (a ``torch.randperm(B, generator=...)``
                order,
                SALCR's ``cross=True``).
            generator: CPU generator for the random order (global RNG when None).

        Raises:
            ValueError: on shape mismatch, out-of-range targets or an unknown order.
        """
        self._check_batch(f)
        y = targets.argmax(dim=1) if targets.is_floating_point() else targets
        self._check_targets(y, f.shape[0])
        y = y.to(self.features.device)
        x = f.to(self.features.device)
        if order == "random":
            perm = torch.randperm(f.shape[0], generator=generator).to(self.features.device)
            x, y = x[perm], y[perm]
        elif order != "sequential":
            raise ValueError(f"order must be 'sequential' or 'random', got {order!r}")
        _sequential_update(self.features, x, y, keep=self.momentum, normalize_input=True)


class InstanceMemory(nn.Module):
    """Per-image unit-norm features ``I`` (N, D) (methods.md §A.3 static, §B.3 EMA).

    Args:
        features: (N, D) float initial features (stored L2-normalised, float32 buffer).
        momentum: ``None`` for a static snapshot (SALCR: never updated within an epoch) or ``m`` for the SDCL
            rule ``I[n] ← norm(m·I[n] + (1 − m)·x)`` with the **raw** (un-normalised) feature ``x`` (m = 0.9).
        temperature: ``τ`` of :meth:`logits`.

    Raises:
        ValueError: for an empty or non-finite bank, a momentum outside [0, 1] or ``temperature <= 0``.
    """

    features: torch.Tensor

    def __init__(self, features: torch.Tensor, *, momentum: float | None, temperature: float = 0.05) -> None:
        super().__init__()
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be None or in [0, 1], got {momentum}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.momentum = None if momentum is None else float(momentum)
        self.temperature = float(temperature)
        self.register_buffer("features", _check_bank(features, "instance"))

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def similarities(self, f: torch.Tensor) -> torch.Tensor:
        """(B, N) float32 ``norm(f)·Iᵀ`` (no temperature); gradients flow to ``f`` only."""
        if f.ndim != 2 or f.shape[1] != self.features.shape[1]:
            raise ValueError(f"expected features (B, {self.features.shape[1]}), got {tuple(f.shape)}")
        with torch.autocast(device_type=f.device.type, enabled=False):
            return F.normalize(f.float(), dim=1) @ self.features.float().t()

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """(B, N) float32 ``norm(f)·Iᵀ/τ``."""
        return self.similarities(f) / self.temperature

    @torch.no_grad()
    def update(self, f: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA update in batch order: ``I[n] ← norm(m·I[n] + (1 − m)·f)`` with raw ``f`` (methods.md §B.4.1).

        Repeated indices (SDCL's two RGB views) are applied one after the other.

        Args:
            f: (B, D) raw features (float32 math).
            indices: (B,) int64 dataset positions in ``[0, N)``.

        Raises:
            RuntimeError: if the memory is static (``momentum=None``).
            ValueError: on shape mismatch or out-of-range indices.
        """
        if self.momentum is None:
            raise RuntimeError(
                "this InstanceMemory is a static snapshot (momentum=None); it cannot be updated"
            )
        if f.ndim != 2 or f.shape[1] != self.features.shape[1] or indices.shape != (f.shape[0],):
            raise ValueError(
                f"need f (B, {self.features.shape[1]}) and indices (B,), got {tuple(f.shape)}, "
                f"{tuple(indices.shape)}"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise ValueError(f"indices must be in [0, {len(self)})")
        rows = indices.to(self.features.device, torch.long)
        _sequential_update(
            self.features, f.to(self.features.device), rows, keep=self.momentum, normalize_input=False
        )
