"""CNL: Collaborative Neighbour Learning (methods.md §B.4.1, §D item 10).

Neighbour sets come from the instance memories only (no gradient), jointly from the deep and shallow views::

    P(n) = { j : s^d_j > ratio · max(s^d)  AND  s^s_j > ratio · max(s^s) },   s^x = I^{a,x}[n] · (I^{b,x})ᵀ

and the loss of one depth pulls the live feature towards them::

    ℓ = mean_batch[ −1/(|P| + 1) · Σ_{j∈P} log max(softmax_j(norm(f) · I^{b,x}ᵀ / τ), 1e−8) ]

The schedule: homogeneous terms from epoch ``hom_start``; heterogeneous from ``het_start``, visible →
infrared on even epochs (with an extra factor 0.1) and infrared → visible on odd epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vireid.training.memory import bank_matmul

__all__ = ["CNLSchedule", "joint_neighbor_mask", "neighbor_loss"]

PROB_FLOOR = 1e-8


def joint_neighbor_mask(sim_deep: Tensor, sim_shallow: Tensor, *, ratio: float = 0.9) -> Tensor:
    """Joint deep/shallow neighbour mask (methods.md §B.4.1 "Neighbour masks").

    Args:
        sim_deep: (B, N) float similarities of each anchor's deep memory row to the deep memory.
        sim_shallow: (B, N) float, the same with the shallow memories.
        ratio: threshold relative to each row's maximum (0.9); strict ``>``.

    Returns:
        (B, N) bool; against its own modality an anchor includes itself (self-similarity is the max).

    Raises:
        ValueError: the two similarity matrices differ in shape.
    """
    if sim_deep.shape != sim_shallow.shape or sim_deep.ndim != 2:
        raise ValueError(
            f"need two (B, N) similarities of one shape, got {sim_deep.shape} / {sim_shallow.shape}"
        )
    deep = sim_deep > ratio * sim_deep.max(dim=1, keepdim=True).values
    shallow = sim_shallow > ratio * sim_shallow.max(dim=1, keepdim=True).values
    return deep & shallow


def neighbor_loss(
    features: Tensor,
    memory: Tensor,
    mask: Tensor,
    *,
    temperature: float = 0.05,
    grad_memory: Tensor | None = None,
) -> Tensor:
    """Neighbour loss of one depth and direction (methods.md §B.4.1 "Neighbour loss").

    Args:
        features: (B, D) live (differentiable) features, not normalised.
        memory: (N, D) float32 L2-normalised instance memory of the target modality (treated as constant).
        mask: (B, N) bool neighbour sets from :func:`joint_neighbor_mask`.
        temperature: softmax temperature τ (0.05).
        grad_memory: (N, D) float32 bank the gradient of ``features`` is taken against (SDCL's official step
            updates the instance memory between the forward and ``loss.backward()``); None = ``memory``.

    Returns:
        Scalar: the batch mean of ``−Σ_{j∈P} log p_j / (|P| + 1)``; rows with an empty P contribute 0.
        The logits are computed in float32 even under bf16/fp16 autocast (at τ = 0.05 a bf16 logit of ~20
        would be rounded to steps of 0.125), like ``ClusterMemory.logits``.

    Raises:
        ValueError: shapes disagree.
    """
    if features.ndim != 2 or mask.shape != (features.shape[0], memory.shape[0]):
        raise ValueError(
            f"need features (B, D), memory (N, D), mask (B, N); got "
            f"{features.shape}, {memory.shape}, {mask.shape}"
        )
    with torch.autocast(device_type=features.device.type, enabled=False):  # fp32 logits, as the memories
        logits = bank_matmul(F.normalize(features.float(), dim=1), memory.float(), grad_memory) / temperature
    log_p = torch.log(torch.softmax(logits, dim=1).clamp_min(PROB_FLOOR))
    weights = mask.float()
    per_row = -(weights * log_p).sum(dim=1) / (weights.sum(dim=1) + 1.0)
    return per_row.mean()


@dataclass(frozen=True)
class CNLSchedule:
    """Which CNL terms run at a (global, 0-based) epoch and with which weights (methods.md §B.4.1).

    Attributes:
        hom_start: first epoch with the homogeneous terms (``hm``).
        het_start: first epoch with the heterogeneous terms (``ht``).
        rgb_to_ir_scale: extra factor on the visible → infrared direction (0.1).
    """

    hom_start: int = 0
    het_start: int = 10
    rgb_to_ir_scale: float = 0.1

    def homogeneous(self, epoch: int) -> bool:
        """Whether L_hom is active at ``epoch``."""
        return epoch >= self.hom_start

    def heterogeneous(self, epoch: int) -> tuple[str, str, float] | None:
        """``(anchor modality, memory modality, direction factor)`` of L_het at ``epoch``, or None.

        Even epochs: visible → infrared with ``rgb_to_ir_scale``; odd epochs: infrared → visible with 1.
        """
        if epoch < self.het_start:
            return None
        if epoch % 2 == 0:
            return "visible", "infrared", self.rgb_to_ir_scale
        return "infrared", "visible", 1.0
