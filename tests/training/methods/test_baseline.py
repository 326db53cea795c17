"""Baseline method: per-modality clustering + memories, the three-term loss, memory updates, batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.training.engine import load_config, make_extractor, prepare_data
from vireid.training.methods import BaselineMethod, DistInfo, RefreshContext, build_method

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "baseline_synthetic.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    run_dir = tmp_path_factory.mktemp("baseline")
    cfg = load_config(
        CONFIG,
        [
            "data.synthetic.num_identities=10",
            "data.synthetic.images_per_camera=4",
            "method_options.clusters_per_batch=2",
            "method_options.num_instances=4",
            "stages.0.iters=2",
            "cluster.k1=6",
            "cluster.k2=2",
        ],
    )
    data = prepare_data(cfg.data, run_dir=run_dir, dist_info=DistInfo())
    torch.manual_seed(0)
    method = build_method(cfg)
    return cfg, data, method


def _ctx(cfg, data, method, *, dist=None, momentum=None):  # type: ignore[no-untyped-def]
    extract = make_extractor(
        method.model, data.records, batch_size=64, device=torch.device("cpu"), dist_info=DistInfo()
    )
    return RefreshContext(
        config=cfg,
        model=method.model,
        forward=lambda *a, **k: method.model.forward_train(*a, **k),
        extract=extract,
        records=data.records,
        stage=cfg.stages[0],
        stage_index=0,
        stage_epoch=0,
        epoch=0,
        seed=123,
        device=torch.device("cpu"),
        input_size=tuple(method.model.default_cfg["input_size"][1:]),
        memory_momentum=momentum,
        dist=dist or DistInfo(),
    )


def test_refresh_builds_one_unit_memory_per_modality(setup) -> None:
    cfg, data, method = setup
    labels = method.refresh(_ctx(cfg, data, method, momentum=0.5))
    for modality in ("visible", "infrared"):
        y = labels.labels[modality]
        assert y.shape == (len(data.records[modality]),) and y.dtype == np.int64
        k = labels.num_clusters(modality)
        assert k >= 2
        memory = method.memories[modality]
        assert memory.features.shape == (k, method.model.default_cfg["embed_dim"])
        torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(k))
        assert memory.momentum == 0.5  # the collapse-guard override reaches the memories


def test_training_step_losses_and_memory_updates(setup) -> None:
    cfg, data, method = setup
    ctx = _ctx(cfg, data, method)
    method.refresh(ctx)
    batch = next(iter(method.epoch_batches(ctx)))
    assert batch["rgb"].shape[0] == batch["ir"].shape[0] == 8
    assert (batch["rgb_label"] >= 0).all() and (batch["ir_label"] >= 0).all()
    before = {m: mem.features.clone() for m, mem in method.memories.items()}
    losses = method.training_step(batch, forward=ctx.forward)
    assert set(losses) == {"loss", "loss_v", "loss_a", "loss_r"}
    torch.testing.assert_close(losses["loss"], losses["loss_v"] + losses["loss_a"] + losses["loss_r"])
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.parameters())
    method.after_backward()
    for modality, key in (("visible", "rgb_label"), ("infrared", "ir_label")):
        changed = (method.memories[modality].features - before[modality]).abs().sum(1) > 0
        used = torch.zeros_like(changed)
        used[batch[key].unique()] = True
        assert torch.equal(changed, used)  # exactly the rows of the batch's clusters moved


def test_batches_are_deterministic_and_shard_by_rank(setup) -> None:
    cfg, data, method = setup
    ctx = _ctx(cfg, data, method)
    method.refresh(ctx)
    full = list(method.epoch_batches(ctx))
    again = list(method.epoch_batches(ctx))
    assert len(full) == cfg.stages[0].iters
    assert torch.equal(full[0]["rgb"], again[0]["rgb"]) and torch.equal(
        full[1]["ir_index"], again[1]["ir_index"]
    )
    halves = [list(method.epoch_batches(_ctx(cfg, data, method, dist=DistInfo(r, 2)))) for r in range(2)]
    for step in range(len(full)):
        for key in ("rgb_index", "ir_index", "rgb_label"):
            joined = torch.cat([halves[0][step][key], halves[1][step][key]])
            assert torch.equal(joined, full[step][key])


def test_invalid_options_and_no_clusters(setup) -> None:
    cfg, data, method = setup
    bad = load_config(CONFIG, ["method_options.instances=3"])
    with pytest.raises(KeyError, match=r"num_instances"):
        BaselineMethod(bad, method.model)
    empty = BaselineMethod(cfg, method.model)
    with pytest.raises(ValueError, match=r"no clusters"):
        empty.epoch_batches(_ctx(cfg, data, method))


def test_state_dict_round_trip(setup) -> None:
    cfg, data, method = setup
    method.refresh(_ctx(cfg, data, method))
    state = method.state_dict()
    other = BaselineMethod(cfg, method.model)
    other.load_state_dict(state)
    for modality in ("visible", "infrared"):
        assert torch.equal(other.memories[modality].features, method.memories[modality].features)
        np.testing.assert_array_equal(other.labels.labels[modality], method.labels.labels[modality])


def test_share_stem_init_copies_the_visible_stem_and_needs_two_streams() -> None:
    from vireid.training.methods._base import share_stem_init
    from vireid.training.models import build_model

    model = build_model("salcr", variant="tiny")
    assert not torch.equal(model.visible_stem.conv1.weight, model.thermal_stem.conv1.weight)
    share_stem_init(model)
    assert torch.equal(model.visible_stem.conv1.weight, model.thermal_stem.conv1.weight)
    with pytest.raises(ValueError, match="two-stream"):
        share_stem_init(torch.nn.Linear(2, 2))


class OfficialCM(torch.autograd.Function):
    """cluster-contrast's ``CM`` op as SALCR ships it: the memory is updated inside the backward, after the
    gradient of this term is taken against the memory *as it is at that moment* (methods.md §0.4)."""

    @staticmethod
    def forward(ctx, inputs, targets, features, momentum):  # type: ignore[no-untyped-def]
        ctx.features, ctx.momentum = features, momentum
        ctx.save_for_backward(inputs, targets)
        return inputs.mm(features.t())

    @staticmethod
    def backward(ctx, grad_outputs):  # type: ignore[no-untyped-def]
        inputs, targets = ctx.saved_tensors
        grad_inputs = grad_outputs.mm(ctx.features)
        for x, y in zip(inputs, targets, strict=True):
            ctx.features[y] = ctx.momentum * ctx.features[y] + (1.0 - ctx.momentum) * x
            ctx.features[y] /= ctx.features[y].norm()
        return grad_inputs, None, None, None


def _official_cm_loss(f, targets, features, momentum, tau):  # type: ignore[no-untyped-def]
    """The official ``ClusterMemory.forward``: CE(CM(norm(f)) / τ)."""
    logits = OfficialCM.apply(torch.nn.functional.normalize(f, dim=1), targets, features, momentum) / tau
    return torch.nn.functional.cross_entropy(logits, targets)


def _two_view_step(update_order: str):  # type: ignore[no-untyped-def]
    """A hand-sized SALCR stage-1 step: 3 visible clusters, 2 infrared, D = 4, B = 5 per view."""
    g = torch.Generator().manual_seed(3)
    c_v, c_r = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g)
    feats = torch.randn(15, 4, generator=g)
    y_v, y_r = torch.tensor([0, 0, 1, 2, 0]), torch.tensor([1, 0, 1, 1, 0])
    cfg = load_config(None, ["memory.momentum=0.2", f"memory.update_order={update_order}"])
    method = BaselineMethod(cfg, torch.nn.Linear(1, 1))
    from vireid.training.memory import ClusterMemory

    method.memories = {
        "visible": ClusterMemory(c_v, temperature=0.05, momentum=0.2),
        "infrared": ClusterMemory(c_r, temperature=0.05, momentum=0.2),
    }
    leaf = feats.clone().requires_grad_(True)
    batch = {
        "rgb": torch.zeros(5, 1),
        "rgb_aug": torch.zeros(5, 1),
        "ir": torch.zeros(5, 1),
        "rgb_label": y_v,
        "ir_label": y_r,
    }
    losses = method.training_step(batch, forward=lambda *a, **k: {"f_g": leaf})
    losses["loss"].backward()
    method.after_backward()
    return (c_v, c_r, feats, y_v, y_r), losses, leaf.grad, method.memories


def test_two_view_step_reproduces_the_official_update_order() -> None:
    """Official SALCR stage 1 builds CE(m_v(V)) then CE(m_v(A)), so its backward updates m_v with A first,
    then takes V's gradient against that updated m_v and updates it with V (issue 11, methods.md §0.4)."""
    (c_v, c_r, feats, y_v, y_r), losses, grad, memories = _two_view_step("official")
    mem_v = torch.nn.functional.normalize(c_v, dim=1).clone()
    mem_r = torch.nn.functional.normalize(c_r, dim=1).clone()
    ref = feats.clone().requires_grad_(True)
    f_v, f_a, f_r = ref[:5], ref[5:10], ref[10:]
    loss_v = _official_cm_loss(f_v, y_v, mem_v, 0.2, 0.05)  # built first ...
    loss_a = _official_cm_loss(f_a, y_v, mem_v, 0.2, 0.05)  # ... so its backward runs second
    loss_r = _official_cm_loss(f_r, y_r, mem_r, 0.2, 0.05)
    (loss_v + loss_a + loss_r).backward()

    torch.testing.assert_close(losses["loss"], (loss_v + loss_a + loss_r).detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, ref.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(memories["visible"].features, mem_v, rtol=0, atol=1e-6)
    torch.testing.assert_close(memories["infrared"].features, mem_r, rtol=0, atol=1e-6)

    # the earlier order (both gradients on the step-start memory, V rows then A rows) differs visibly
    _, old_losses, old_grad, old_memories = _two_view_step("pre_update")
    torch.testing.assert_close(old_losses["loss"], losses["loss"], rtol=0, atol=1e-6)  # same values
    assert (old_grad[:5] - grad[:5]).abs().max() > 1e-3  # V rows: the gradient memory differs
    torch.testing.assert_close(old_grad[5:], grad[5:], rtol=0, atol=1e-6)  # A and R rows agree
    assert (old_memories["visible"].features - mem_v).abs().max() > 1e-3
