"""Cluster and instance memories with explicit momentum updates (methods.md §0.4, §B.3, §D.1).

The official code hides the cluster-memory update inside the autograd backward of a custom op. Here the
update is an explicit :meth:`ClusterMemory.update` under ``no_grad`` (house-style §17); the logits/loss use
the memory **before** the update, exactly like the backward formulation (the parity test proves it).

Update order inside one step (``memory.update_order``, docs/salcr.md and docs/sdcl.md "Memory update
order"). In the official code a memory used by several loss terms of one step is updated by the backward
of each term in turn, and autograd visits the terms in **reverse order of construction**; each term's
gradient ``∂L/∂norm(f) = (∂L/∂logits / τ) · C`` is taken against the memory *as it stands when backward
reaches that term*, i.e. already updated by the terms built after it (the logits themselves, and so the
softmax, were computed in the forward on the step-start memory). :meth:`ClusterMemory.chained_losses`
reproduces that explicitly (``"official"``) or applies the simpler rule every gradient on the step-start
memory, updates in construction order after the backward (``"pre_update"``, vireid's earlier order).

Momentum convention (cluster-contrast): ``c ← norm(m·c + (1 − m)·x)``, so ``m = 0.1`` keeps 10 % of the
old prototype. Updates are per sample, sequential, re-normalised after each sample.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UPDATE_ORDERS", "ClusterMemory", "InstanceMemory", "MemoryUse", "bank_matmul"]

logger = logging.getLogger(__name__)

UpdateOrder = Literal["sequential", "random"]
UPDATE_ORDERS = ("official", "pre_update")
"""Values of ``memory.update_order`` (see the module docstring)."""


class _SplitBankMatmul(torch.autograd.Function):
    """``x · value_bankᵀ`` forward; ``grad · grad_bank`` is the gradient of ``x`` (none for the banks)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, value_bank: torch.Tensor, grad_bank: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grad_bank)
        return x @ value_bank.t()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad_bank,) = ctx.saved_tensors
        return grad @ grad_bank, None, None


def bank_matmul(x: torch.Tensor, bank: torch.Tensor, grad_bank: torch.Tensor | None = None) -> torch.Tensor:
    """``x · bankᵀ`` whose gradient for ``x`` is taken against ``grad_bank`` (default: ``bank`` itself).

    This is what the official custom ops compute when the bank changes between the forward and the
    backward (methods.md §0.4; module docstring): the values come from the bank at forward time, the
    gradient ``grad · grad_bank`` from the bank at backward time. The banks never receive a gradient.

    Args:
        x: (B, D) float features (differentiable).
        bank: (K, D) float memory rows of the forward value.
        grad_bank: (K, D) float memory rows of the gradient; None = ``bank``.

    Returns:
        (B, K) ``x · bankᵀ``.
    """
    if grad_bank is None or grad_bank is bank:
        return x @ bank.detach().t()
    out: torch.Tensor = _SplitBankMatmul.apply(  # type: ignore[no-untyped-call]
        x, bank.detach(), grad_bank.detach()
    )
    return out


def _assign_bank(features: torch.Tensor, bank: torch.Tensor) -> None:
    """Copy ``bank`` into a memory's ``features`` in place; ``ValueError`` when the shapes differ."""
    if bank.shape != features.shape:
        raise ValueError(f"bank must be {tuple(features.shape)}, got {tuple(bank.shape)}")
    features.copy_(bank)


@dataclass(frozen=True)
class MemoryUse:
    """One cross-entropy term of a step against a :class:`ClusterMemory` (see ``chained_losses``).

    Attributes:
        features: (B, D) live features of this process (differentiable).
        targets: (B,) int64 cluster ids or (B, K) float probability targets of ``features``.
        rows: (B', D) detached rows that update the memory for this term; under DDP the rows of all ranks
            in rank order (what one process with the global batch would see). None = ``features``.
        row_targets: (B',) int64 ids (or (B', K) probabilities) of ``rows``; None = ``targets``.
    """

    features: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor | None = None
    row_targets: torch.Tensor | None = None


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

    def logits(self, f: torch.Tensor, *, grad_bank: torch.Tensor | None = None) -> torch.Tensor:
        """``norm(f)·Cᵀ/τ`` in float32; gradients flow to ``f`` only (the memory is a buffer).

        Args:
            f: (B, D) features of any float dtype (bf16/fp16 under autocast are upcast).
            grad_bank: (K, D) float32 memory the gradient is taken against (:func:`bank_matmul`); None = the
                current memory.

        Returns:
            (B, K) float32 logits.
        """
        self._check_batch(f)
        with torch.autocast(device_type=f.device.type, enabled=False):
            return (
                bank_matmul(F.normalize(f.float(), dim=1), self.features.float(), grad_bank)
                / self.temperature
            )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`logits`."""
        return self.logits(f)

    def loss(
        self, f: torch.Tensor, targets: torch.Tensor, *, grad_bank: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy of :meth:`logits` (uses the memory as it is now, i.e. before :meth:`update`).

        Args:
            f: (B, D) features.
            targets: (B,) int64 cluster ids, or (B, K) float probability targets (one-hot or soft, as SALCR's
                DAGL passes them).
            grad_bank: see :meth:`logits`.

        Returns:
            Scalar float32 mean loss.
        """
        logits = self.logits(f, grad_bank=grad_bank)
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
        self._update_bank(self.features, f, targets, order=order, generator=generator)

    @torch.no_grad()
    def _update_bank(
        self,
        bank: torch.Tensor,
        f: torch.Tensor,
        targets: torch.Tensor,
        *,
        order: UpdateOrder,
        generator: torch.Generator | None,
    ) -> None:
        self._check_batch(f)
        y = targets.argmax(dim=1) if targets.is_floating_point() else targets
        self._check_targets(y, f.shape[0])
        y = y.to(bank.device)
        x = f.to(bank.device)
        if order == "random":
            perm = torch.randperm(f.shape[0], generator=generator).to(bank.device)
            x, y = x[perm], y[perm]
        elif order != "sequential":
            raise ValueError(f"order must be 'sequential' or 'random', got {order!r}")
        _sequential_update(bank, x, y, keep=self.momentum, normalize_input=True)

    def chained_losses(
        self,
        uses: Sequence[MemoryUse],
        *,
        update_order: str = "official",
        order: UpdateOrder = "sequential",
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The cross-entropy of every term of one step against this memory, and the memory after the step.

        ``uses`` are given in the order the official code builds the terms. ``"official"``: autograd's
        backward visits them last-built first; term ``i``'s gradient is taken against the memory updated
        by the rows of terms ``i+1 … n−1`` (in that reverse order), and the memory ends updated by all
        rows in reverse order (methods.md §0.4; the module docstring). ``"pre_update"``: every gradient
        against the step-start memory, rows applied in construction order. Every loss *value* uses the
        step-start memory in both. The memory itself is not changed: store the returned bank with
        :meth:`assign` after the backward.

        Args:
            uses: the terms, in construction order.
            update_order: ``"official"`` or ``"pre_update"``.
            order: per-term sample order of the update (:meth:`update`).
            generator: generator of a ``"random"`` order (one permutation per term, drawn in update order).

        Returns:
            ``(losses, bank)``: one scalar float32 loss per use (same order) and the (K, D) float32 memory
            after all updates.

        Raises:
            ValueError: an unknown ``update_order``, or the checks of :meth:`loss` / :meth:`update`.
        """
        if update_order not in UPDATE_ORDERS:
            raise ValueError(f"update_order must be one of {UPDATE_ORDERS}, got {update_order!r}")
        visit = range(len(uses) - 1, -1, -1) if update_order == "official" else range(len(uses))
        bank = self.features
        grad_banks: list[torch.Tensor | None] = [None] * len(uses)  # None: the step-start memory
        for i in visit:
            use = uses[i]
            if update_order == "official" and bank is not self.features:
                grad_banks[i] = bank
            bank = bank.clone()
            rows = use.features.detach() if use.rows is None else use.rows
            targets = use.targets if use.row_targets is None else use.row_targets
            self._update_bank(bank, rows.float(), targets, order=order, generator=generator)
        losses = [self.loss(use.features, use.targets, grad_bank=grad_banks[i]) for i, use in enumerate(uses)]
        return losses, bank

    @torch.no_grad()
    def assign(self, bank: torch.Tensor) -> None:
        """Copy ``bank`` (K, D) into the memory (the result of :meth:`chained_losses`).

        Raises:
            ValueError: ``bank`` has another shape.
        """
        _assign_bank(self.features, bank)


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
        self._update_bank(self.features, f, indices)

    @torch.no_grad()
    def _update_bank(self, bank: torch.Tensor, f: torch.Tensor, indices: torch.Tensor) -> None:
        if self.momentum is None:
            raise RuntimeError(
                "this InstanceMemory is a static snapshot (momentum=None); it cannot be updated"
            )
        if f.ndim != 2 or f.shape[1] != bank.shape[1] or indices.shape != (f.shape[0],):
            raise ValueError(
                f"need f (B, {bank.shape[1]}) and indices (B,), got {tuple(f.shape)}, {tuple(indices.shape)}"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise ValueError(f"indices must be in [0, {len(self)})")
        rows = indices.to(bank.device, torch.long)
        _sequential_update(bank, f.to(bank.device), rows, keep=self.momentum, normalize_input=False)

    @torch.no_grad()
    def updated(self, f: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The (N, D) float32 bank :meth:`update` would produce, leaving this memory unchanged.

        SDCL's official step updates the instance memories *before* ``loss.backward()`` while its
        neighbour loss holds the bank by reference, so that loss's gradient is taken against this updated
        bank (:func:`bank_matmul`, docs/sdcl.md "Memory update order"); store it with :meth:`assign`.

        Raises:
            RuntimeError / ValueError: as :meth:`update`.
        """
        bank = self.features.clone()
        self._update_bank(bank, f, indices)
        return bank

    @torch.no_grad()
    def assign(self, bank: torch.Tensor) -> None:
        """Copy ``bank`` (N, D) into the memory.

        Raises:
            ValueError: ``bank`` has another shape.
        """
        _assign_bank(self.features, bank)
