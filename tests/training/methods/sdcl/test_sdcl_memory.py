"""SDCL memories: per-sample sequential momentum updates (methods.md §0.4, §B.3 item 3, §D item 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vireid.training.methods.sdcl import ClusterMemory, InstanceMemory, sequential_momentum_update


def _loop(bank: torch.Tensor, values: torch.Tensor, slots: torch.Tensor, m: float) -> torch.Tensor:
    bank = bank.clone()
    for v, s in zip(values, slots.tolist(), strict=True):
        bank[s] = F.normalize(m * bank[s] + (1 - m) * v, dim=0)
    return bank


def test_instance_memory_ema_09_with_raw_features_by_hand() -> None:
    memory = InstanceMemory(torch.tensor([[1.0, 0.0], [0.0, 3.0]]), np.array([0, -1]), momentum=0.9)
    torch.testing.assert_close(memory.features, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # normalised
    memory.update(torch.tensor([[0.0, 10.0]]), torch.tensor([0]))  # raw f, not normalised
    expected = F.normalize(torch.tensor([0.9, 1.0]), dim=0)  # 0.9*[1,0] + 0.1*[0,10]
    torch.testing.assert_close(memory.features[0], expected)
    torch.testing.assert_close(memory.features[1], torch.tensor([0.0, 1.0]))
    assert memory.labels.tolist() == [0, -1]  # outliers keep their row


def test_repeated_indices_update_sequentially_in_batch_order() -> None:
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(5, 4), dim=1)
    values = torch.randn(12, 4) * 3
    slots = torch.tensor([1, 3, 1, 1, 0, 3, 4, 1, 0, 2, 2, 1])
    out = bank.clone()
    sequential_momentum_update(out, values, slots, momentum=0.9)
    torch.testing.assert_close(out, _loop(bank, values, slots, 0.9))
    reordered = bank.clone()
    sequential_momentum_update(reordered, values.flip(0), slots.flip(0), momentum=0.9)
    assert not torch.allclose(reordered, out)  # order matters


def test_cluster_memory_uses_normalised_rows_and_pre_update_logits() -> None:
    memory = ClusterMemory(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), temperature=0.05, momentum=0.1)
    f = torch.tensor([[3.0, 4.0], [0.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    logits = F.normalize(f.detach(), dim=1) @ torch.eye(2).T / 0.05
    assert memory.loss(f, y).item() == pytest.approx(F.cross_entropy(logits, y).item())
    memory.update(f, y)
    c = F.normalize(0.1 * torch.tensor([1.0, 0.0]) + 0.9 * torch.tensor([0.6, 0.8]), dim=0)
    c = F.normalize(0.1 * c + 0.9 * torch.tensor([0.0, 1.0]), dim=0)
    torch.testing.assert_close(memory.features[0], c)
    torch.testing.assert_close(memory.features[1], torch.tensor([0.0, 1.0]))


def test_bad_slots_raise() -> None:
    with pytest.raises(ValueError, match="out of range"):
        sequential_momentum_update(torch.zeros(2, 2), torch.ones(1, 2), torch.tensor([2]), momentum=0.9)
    with pytest.raises(ValueError):
        ClusterMemory(torch.zeros(0, 4))
