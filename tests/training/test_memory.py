"""Tests for vireid.training.memory: explicit updates vs the update-inside-backward formulation (§0.4)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from vireid.training.memory import ClusterMemory, InstanceMemory


class ReferenceCM(torch.autograd.Function):
    """The original formulation: logits in forward, memory update hidden in backward (methods.md §0.4)."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        memory: torch.Tensor,
        momentum: float,
        order: list[int],
    ) -> torch.Tensor:
        ctx.memory, ctx.momentum, ctx.order = memory, momentum, order
        ctx.save_for_backward(inputs, targets)
        return inputs.mm(memory.t())

    @staticmethod
    def backward(ctx: Any, grad_outputs: torch.Tensor) -> tuple[Any, ...]:
        inputs, targets = ctx.saved_tensors
        grad_inputs = grad_outputs.mm(ctx.memory)  # the memory before the update
        for pos in ctx.order:  # one sample at a time, re-normalised
            y = int(targets[pos])
            ctx.memory[y] = ctx.momentum * ctx.memory[y] + (1.0 - ctx.momentum) * inputs[pos]
            ctx.memory[y] = ctx.memory[y] / ctx.memory[y].norm()
        return grad_inputs, None, None, None, None


def _setup(seed: int = 0, batch: int = 24, clusters: int = 5, dim: int = 16) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    centroids = torch.randn(clusters, dim, generator=g)
    f = torch.randn(batch, dim, generator=g)
    targets = torch.randint(0, clusters, (batch,), generator=g)
    assert len(set(targets.tolist())) < batch  # repeated targets make the order matter
    return centroids, f, targets


@pytest.mark.parametrize("order", ["sequential", "random"])
def test_explicit_update_equals_backward_update(order: str) -> None:
    centroids, f, targets = _setup()
    tau, m = 0.05, 0.1
    # reference: update happens inside loss.backward()
    ref_memory = F.normalize(centroids, dim=1).clone()
    ref_f = f.clone().requires_grad_(True)
    perm = torch.randperm(len(f), generator=torch.Generator().manual_seed(7)).tolist()
    ref_order = perm if order == "random" else list(range(len(f)))
    ref_logits = ReferenceCM.apply(F.normalize(ref_f, dim=1), targets, ref_memory, m, ref_order) / tau
    F.cross_entropy(ref_logits, targets).backward()
    # ours: loss on the current memory, backward, then the explicit update
    memory = ClusterMemory(centroids, temperature=tau, momentum=m)
    our_f = f.clone().requires_grad_(True)
    logits = memory.logits(our_f)
    memory.loss(our_f, targets).backward()
    memory.update(our_f.detach(), targets, order=order, generator=torch.Generator().manual_seed(7))  # type: ignore[arg-type]

    torch.testing.assert_close(logits, ref_logits.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(our_f.grad, ref_f.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(memory.features, ref_memory, rtol=0, atol=1e-6)
    assert not torch.allclose(memory.features, F.normalize(centroids, dim=1))  # it did move
    if order == "random":  # the order matters for repeated targets
        seq = ClusterMemory(centroids, temperature=tau, momentum=m)
        seq.update(f, targets)
        assert not torch.allclose(seq.features, memory.features, atol=1e-6)


def test_update_rule_by_hand() -> None:
    memory = ClusterMemory(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), momentum=0.5)
    memory.update(torch.tensor([[0.0, 2.0], [0.0, -3.0]]), torch.tensor([0, 0]))
    first = F.normalize(torch.tensor([0.5, 0.5]), dim=0)  # 0.5·[1,0] + 0.5·norm([0,2])
    second = F.normalize(0.5 * first + 0.5 * torch.tensor([0.0, -1.0]), dim=0)
    torch.testing.assert_close(memory.features[0], second)
    torch.testing.assert_close(memory.features[1], torch.tensor([0.0, 1.0]))


def test_cluster_memory_is_a_normalised_buffer() -> None:
    memory = ClusterMemory(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    torch.testing.assert_close(memory.features, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert "features" in memory.state_dict() and not memory.features.requires_grad
    assert list(memory.parameters()) == []
    meta = memory.to("meta")
    assert meta.features.device.type == "meta"


def test_bf16_autocast_inputs_compute_in_fp32() -> None:
    centroids, f, targets = _setup(seed=1)
    memory = ClusterMemory(centroids)
    f_bf16 = f.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = memory.logits(f_bf16)
        loss = memory.loss(f_bf16, targets)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(logits, memory.logits(f_bf16.float()))
    memory.update(f_bf16, targets)
    assert memory.features.dtype == torch.float32
    torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(len(centroids)))


def test_probability_targets() -> None:
    centroids, f, targets = _setup(seed=2)
    memory = ClusterMemory(centroids)
    one_hot = F.one_hot(targets, len(centroids)).float()
    torch.testing.assert_close(memory.loss(f, one_hot), memory.loss(f, targets))
    soft = torch.softmax(torch.randn(len(f), len(centroids)), dim=1)
    expected = -(soft * torch.log_softmax(memory.logits(f), dim=1)).sum(1).mean()
    torch.testing.assert_close(memory.loss(f, soft), expected)
    other = ClusterMemory(centroids)
    memory.update(f, one_hot)
    other.update(f, targets)
    torch.testing.assert_close(memory.features, other.features)


def test_cluster_memory_errors() -> None:
    centroids, f, targets = _setup()
    memory = ClusterMemory(centroids)
    with pytest.raises(ValueError, match="targets"):
        memory.loss(f, targets + 100)
    with pytest.raises(ValueError, match="order"):
        memory.update(f, targets, order="backwards")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        memory.logits(f[:, :3])
    with pytest.raises(ValueError, match="temperature"):
        ClusterMemory(centroids, temperature=0)
    with pytest.raises(ValueError, match="momentum"):
        ClusterMemory(centroids, momentum=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        ClusterMemory(torch.zeros(0, 4))


def test_instance_memory_static_snapshot() -> None:
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    memory = InstanceMemory(feats, momentum=None)
    torch.testing.assert_close(memory.features, torch.eye(2))
    with pytest.raises(RuntimeError, match="static"):
        memory.update(torch.ones(1, 2), torch.tensor([0]))
    torch.testing.assert_close(memory.logits(torch.tensor([[5.0, 0.0]])), torch.tensor([[20.0, 0.0]]))


def test_instance_memory_ema_uses_raw_features_in_order() -> None:
    memory = InstanceMemory(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), momentum=0.9)
    x = torch.tensor([[0.0, 10.0], [0.0, -10.0], [4.0, 0.0]])
    memory.update(x, torch.tensor([0, 0, 2]))  # index 0 twice (two RGB views)
    step1 = F.normalize(0.9 * torch.tensor([1.0, 0.0]) + 0.1 * torch.tensor([0.0, 10.0]), dim=0)
    step2 = F.normalize(0.9 * step1 + 0.1 * torch.tensor([0.0, -10.0]), dim=0)
    row2 = F.normalize(
        0.9 * F.normalize(torch.tensor([1.0, 1.0]), dim=0) + 0.1 * torch.tensor([4.0, 0.0]), dim=0
    )
    torch.testing.assert_close(memory.features[0], step2)
    torch.testing.assert_close(memory.features[1], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(memory.features[2], row2)


def test_instance_memory_matches_per_sample_loop() -> None:
    g = torch.Generator().manual_seed(3)
    bank = torch.randn(10, 8, generator=g)
    x = torch.randn(30, 8, generator=g)
    idx = torch.randint(0, 10, (30,), generator=g)
    memory = InstanceMemory(bank, momentum=0.9)
    expected = F.normalize(bank, dim=1)
    for row, n in zip(x, idx.tolist(), strict=True):
        expected[n] = 0.9 * expected[n] + 0.1 * row
        expected[n] = expected[n] / expected[n].norm()
    memory.update(x, idx)
    torch.testing.assert_close(memory.features, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="indices"):
        memory.update(x[:1], torch.tensor([10]))


# ---------------------------------------------------------------------------------------------------
# SDCL's use of the memories (methods.md §B.3 item 3, §B.4.1, §D item 1; moved from the former
# tests/training/methods/sdcl/test_sdcl_memory.py when SDCL switched to this module).


def _per_sample_loop(
    bank: torch.Tensor, values: torch.Tensor, slots: torch.Tensor, m: float, *, normalize: bool
) -> torch.Tensor:
    bank = bank.clone()
    for v, s in zip(values, slots.tolist(), strict=True):
        x = F.normalize(v, dim=0) if normalize else v
        bank[s] = F.normalize(m * bank[s] + (1 - m) * x, dim=0)
    return bank


def test_sdcl_instance_memory_ema_09_with_raw_features_by_hand() -> None:
    memory = InstanceMemory(torch.tensor([[1.0, 0.0], [0.0, 3.0]]), momentum=0.9)
    torch.testing.assert_close(memory.features, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # normalised
    memory.update(torch.tensor([[0.0, 10.0]]), torch.tensor([0]))  # raw f, not normalised
    expected = F.normalize(torch.tensor([0.9, 1.0]), dim=0)  # 0.9*[1,0] + 0.1*[0,10]
    torch.testing.assert_close(memory.features[0], expected)
    torch.testing.assert_close(memory.features[1], torch.tensor([0.0, 1.0]))
    assert len(memory) == 2  # one row per image: an outlier (DBSCAN −1) keeps its row


@pytest.mark.parametrize("kind", ["instance", "cluster"])
def test_repeated_slots_update_sequentially_in_batch_order(kind: str) -> None:
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(5, 4), dim=1)
    values = torch.randn(12, 4) * 3
    slots = torch.tensor([1, 3, 1, 1, 0, 3, 4, 1, 0, 2, 2, 1])

    def build() -> ClusterMemory | InstanceMemory:
        if kind == "instance":  # SDCL: EMA 0.9 with the raw feature
            return InstanceMemory(bank, momentum=0.9)
        return ClusterMemory(bank, momentum=0.1)  # cluster momentum with norm(f)

    memory, m = build(), 0.9 if kind == "instance" else 0.1
    start = memory.features.clone()
    memory.update(values, slots)
    expected = _per_sample_loop(start, values, slots, m, normalize=kind == "cluster")
    torch.testing.assert_close(memory.features, expected, rtol=0, atol=1e-6)
    reordered = build()
    reordered.update(values.flip(0), slots.flip(0))
    assert not torch.allclose(reordered.features, memory.features)  # order matters


def test_sdcl_cluster_memory_uses_normalised_rows_and_pre_update_logits() -> None:
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
    with pytest.raises(ValueError, match="indices must be in"):
        InstanceMemory(torch.ones(2, 2), momentum=0.9).update(torch.ones(1, 2), torch.tensor([2]))
    with pytest.raises(ValueError, match="targets must be in"):
        ClusterMemory(torch.ones(2, 2)).update(torch.ones(1, 2), torch.tensor([2]))
    with pytest.raises(ValueError):
        ClusterMemory(torch.zeros(0, 4))


def test_chained_losses_rejects_an_unknown_update_order() -> None:
    from vireid.training.memory import MemoryUse

    memory = ClusterMemory(torch.eye(2), momentum=0.5)
    with pytest.raises(ValueError, match="update_order"):
        memory.chained_losses([MemoryUse(torch.ones(1, 2), torch.tensor([0]))], update_order="later")
    with pytest.raises(ValueError, match="must be"):
        memory.assign(torch.zeros(3, 2))
