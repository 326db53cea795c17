"""CNL masks, neighbour loss and schedule (methods.md §B.4.1, §D item 10) on hand-checkable cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vireid.training.methods.sdcl import CNLSchedule, joint_neighbor_mask, neighbor_loss


def test_joint_mask_is_the_intersection_of_both_depths_and_includes_self() -> None:
    memory_d = F.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.95, 0.31], [0.0, 1.0]]), dim=1)
    memory_s = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.96, 0.28], [0.97, 0.24]]), dim=1)
    anchors = torch.tensor([0])
    sim_d = memory_d[anchors] @ memory_d.T  # [1, .99, .95, 0]      -> > 0.9: {0, 1, 2}
    sim_s = memory_s[anchors] @ memory_s.T  # [1, 0, .96, .97]      -> > 0.9: {0, 2, 3}
    mask = joint_neighbor_mask(sim_d, sim_s, ratio=0.9)
    assert mask.tolist() == [[True, False, True, False]]  # self (0) and 2 only


def test_threshold_is_strict_and_relative_to_the_row_max() -> None:
    sim = torch.tensor([[0.5, 0.45, 0.46, 0.2]])  # 0.9 * max = 0.45: 0.45 is not > 0.45
    assert joint_neighbor_mask(sim, sim).tolist() == [[True, False, True, False]]
    with pytest.raises(ValueError):
        joint_neighbor_mask(sim, sim[:, :3])


def test_neighbor_loss_by_hand() -> None:
    memory = torch.eye(3)
    feature = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)  # norm -> e0
    mask = torch.tensor([[True, True, False]])
    loss = neighbor_loss(feature, memory, mask, temperature=0.5)
    z = math.exp(2.0) + 2.0  # logits [2, 0, 0]
    expected = -(math.log(math.exp(2.0) / z) + math.log(1.0 / z)) / 3.0  # |P| + 1 = 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert feature.grad is not None and torch.isfinite(feature.grad).all()
    empty = neighbor_loss(feature.detach(), memory, torch.zeros(1, 3, dtype=torch.bool))
    assert empty.item() == 0.0


def test_probability_floor_before_the_log() -> None:
    memory = torch.eye(2)
    loss = neighbor_loss(torch.tensor([[1.0, 0.0]]), memory, torch.tensor([[False, True]]), temperature=0.001)
    assert loss.item() == pytest.approx(-math.log(1e-8) / 2.0, rel=1e-5)


def test_schedule_start_epochs_and_parity_alternation() -> None:
    sched = CNLSchedule(hom_start=1, het_start=10, rgb_to_ir_scale=0.1)
    assert not sched.homogeneous(0) and sched.homogeneous(1)
    assert sched.heterogeneous(9) is None
    assert sched.heterogeneous(10) == ("visible", "infrared", 0.1)
    assert sched.heterogeneous(11) == ("infrared", "visible", 1.0)
    assert sched.heterogeneous(30) == ("visible", "infrared", 0.1)  # stage 2 keeps the global parity


def test_neighbor_loss_is_float32_under_bf16_autocast() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(6, 16, generator=generator)
    memory = torch.nn.functional.normalize(torch.randn(40, 16, generator=generator), dim=1)
    mask = torch.rand(6, 40, generator=generator) > 0.7
    expected = neighbor_loss(features, memory, mask)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = neighbor_loss(features, memory, mask)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)  # bf16 logits at τ = 0.05 differ by ~1e-2
