"""SALCRMethod on the shared Trainer: options, part-head reset, stage-2 refresh / batches / step / memory
updates on tiny synthetic data, and a two-stage smoke run with the tiny preset (methods.md §A)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.training.engine import (
    build_trainer,
    load_config,
    load_model_from_checkpoint,
    make_extractor,
    prepare_data,
)
from vireid.training.methods import METHODS, DistInfo, RefreshContext, build_method
from vireid.training.methods.salcr import SALCRConfig, SALCRMethod, reset_part_head_in_place
from vireid.training.models import build_model

CONFIG = Path(__file__).resolve().parents[4] / "configs" / "salcr_tiny.yaml"
SMALL = [
    "data.synthetic.num_identities=12",
    "method_options.clusters_per_batch=2",
    "method_options.num_instances=3",
    "method_options.anchors_per_modality=1",
    "method_options.k_instance=4",
    "stages.0.iters=2",
    "stages.1.iters=2",
    "stages.0.epochs=1",
    "stages.1.epochs=1",
    "cluster.k1=6",
    "cluster.k2=2",
    "eval.every=0",
    "logging.progress=false",
    "logging.tensorboard=false",
]


def test_registered_and_options_validated() -> None:
    assert METHODS["salcr"] is SALCRMethod
    cfg = load_config(CONFIG)
    with pytest.raises(KeyError, match="valid keys"):
        build_method(
            dataclasses.replace(cfg, method_options={"fgsall": False}),
            model=build_model("salcr", variant="tiny"),
        )
    with pytest.raises(ValueError, match="a_to_r"):
        SALCRConfig(a_to_r="typo")
    with pytest.raises(ValueError, match="phase"):
        stages = (cfg.stages[0], dataclasses.replace(cfg.stages[1], options={"phase": "stage2"}))
        build_method(dataclasses.replace(cfg, stages=stages), model=build_model("salcr", variant="tiny"))
    with pytest.raises(ValueError, match="part head"):
        build_method(cfg, model=torch.nn.Linear(2, 2))
    parity = SALCRConfig(fgsal=False, gpcr=False, bool_flags="parity")
    assert parity.use_fgsal and parity.use_gpcr  # argparse type=bool parity: 'False' stays on
    assert not SALCRConfig(fgsal=False).use_fgsal


def test_part_head_reset_in_place_keeps_parameter_objects() -> None:
    torch.manual_seed(0)
    model = build_model("salcr", variant="tiny")
    params = {
        name: p for name, p in model.named_parameters() if name.startswith(("part_pool", "bottleneck_part"))
    }
    before = {name: p.detach().clone() for name, p in params.items()}
    trunk_before = model.trunk.layer1[0].conv1.weight.detach().clone()
    model.bottleneck_part.running_mean.fill_(3.0)
    reset_part_head_in_place(model)
    after = dict(model.named_parameters())
    for name, p in params.items():
        assert after[name] is p  # an optimizer built before still owns it
    assert not torch.equal(params["part_pool.tokens"], before["part_pool.tokens"])  # freshly drawn
    assert torch.equal(
        model.bottleneck_part.running_mean, torch.zeros_like(model.bottleneck_part.running_mean)
    )
    assert torch.equal(model.trunk.layer1[0].conv1.weight, trunk_before)  # the rest is untouched


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """One small synthetic dataset shared by the tests of this module (generated once)."""
    run_dir = tmp_path_factory.mktemp("salcr_data")
    cfg = load_config(CONFIG, SMALL)
    return Path(prepare_data(cfg.data, run_dir=run_dir, dist_info=DistInfo()).root)


@pytest.fixture(scope="module")
def cross_setup(tmp_path_factory, synthetic_root):  # type: ignore[no-untyped-def]
    run_dir = tmp_path_factory.mktemp("salcr")
    cfg = load_config(CONFIG, [*SMALL, "cluster.eps=0.7", f"data.root={synthetic_root}"])
    data = prepare_data(cfg.data, run_dir=run_dir, dist_info=DistInfo())
    torch.manual_seed(0)
    method = build_method(cfg)
    extract = make_extractor(
        method.model, data.records, batch_size=64, device=torch.device("cpu"), dist_info=DistInfo()
    )
    ctx = RefreshContext(
        config=cfg,
        model=method.model,
        forward=lambda *a, **k: method.model.forward_train(*a, **k),
        extract=extract,
        records=data.records,
        stage=cfg.stages[1],
        stage_index=1,
        stage_epoch=0,
        epoch=1,
        seed=7,
        device=torch.device("cpu"),
        input_size=tuple(method.model.default_cfg["input_size"][1:]),
    )
    method.on_stage_start(ctx)
    labels = method.refresh(ctx)
    return cfg, data, method, ctx, labels


def test_cross_refresh_builds_memories_and_labels(cross_setup) -> None:  # type: ignore[no-untyped-def]
    _, data, method, _, labels = cross_setup
    dim = method.model.default_cfg["embed_dim"]
    n_v, n_r = len(data.records["visible"]), len(data.records["infrared"])
    k_v, k_r = labels.num_clusters("visible"), labels.num_clusters("infrared")
    assert k_v >= 2 and k_r >= 2, "tiny synthetic data should give clusters in both modalities"
    assert method.memories["v"].features.shape == (k_v, dim) and method.memories["r"].features.shape == (
        k_r,
        dim,
    )
    assert len(method.part_memories) == 3
    for part in method.part_memories:
        assert part["vp"].features.shape == part["vpa"].features.shape == (k_v, dim)
        assert part["rp"].features.shape == part["rpa"].features.shape == (k_r, dim)
        torch.testing.assert_close(part["vp"].features.norm(dim=1), torch.ones(k_v))
    kept_v, kept_r = int((labels.labels["visible"] >= 0).sum()), int((labels.labels["infrared"] >= 0).sum())
    assert method.instances["v"].shape == (kept_v, dim) and method.instances["rp2"].shape == (kept_r, dim)
    t = {k: v.numpy() for k, v in method.targets.items()}
    assert t["y_v"].shape == (n_v,) and t["cross_r"].shape == (n_r,)
    assert ((t["y_v"] >= 0) == (labels.labels["visible"] >= 0)).all()
    assert t["cross_v"].max() < k_r and t["cross_r"].max() < k_v  # the other modality's label space
    np.testing.assert_array_equal(labels.cross_labels["visible"], t["cross_v"])


def test_cross_batch_is_row_paired_and_step_updates_memories(cross_setup) -> None:  # type: ignore[no-untyped-def]
    method, ctx = cross_setup[2], cross_setup[3]
    batch = next(iter(method.epoch_batches(ctx)))
    n = 2 * method.options.anchors_per_modality * method.options.num_instances
    assert batch["rgb"].shape[0] == batch["ir"].shape[0] == n
    t = method.targets
    iv, ir = batch["rgb_index"], batch["ir_index"]
    # StageThreeSampler: every pair is a pseudo-positive (RGB anchor: y_v = ŷ_r; IR anchor: ŷ_v = y_r).
    paired = (t["y_v"][iv] == t["cross_r"][ir]) | (t["cross_v"][iv] == t["y_r"][ir])
    assert bool(paired.all())
    before = {name: mem.features.clone() for name, mem in method.memories.items()}
    part_before = method.part_memories[0]["rpa"].features.clone()
    losses = method.training_step(batch, forward=ctx.forward)
    assert set(losses) == {"loss_dagl", "loss_fgsal", "loss_gi", "loss_pi", "loss"}
    assert all(torch.isfinite(v) for v in losses.values())
    expected = losses["loss_dagl"] + losses["loss_fgsal"] + 0.5 * (losses["loss_gi"] + losses["loss_pi"])
    torch.testing.assert_close(losses["loss"], expected)
    losses["loss"].backward()
    assert method.model.part_pool.tokens.grad is not None  # FGSAL trains the fresh part head
    method.after_backward()
    touched_v = set(torch.cat([t["y_v"][iv], t["cross_r"][ir]]).tolist())
    for row in range(before["v"].shape[0]):
        changed = not torch.equal(before["v"][row], method.memories["v"].features[row])
        assert changed == (row in touched_v), row
    changed_rpa = {
        r
        for r in range(part_before.shape[0])
        if not torch.equal(part_before[r], method.part_memories[0]["rpa"].features[r])
    }
    assert changed_rpa == set(t["y_r"][ir].tolist())
    torch.testing.assert_close(method.memories["r"].features.norm(dim=1), torch.ones(before["r"].shape[0]))


def test_ablation_switches_drop_terms(cross_setup) -> None:  # type: ignore[no-untyped-def]
    method, ctx = cross_setup[2], cross_setup[3]
    batch = next(iter(method.epoch_batches(ctx)))
    method.options = SALCRConfig(**{**dataclasses.asdict(method.options), "fgsal": False, "gpcr": False})
    try:
        losses = method.training_step(batch, forward=ctx.forward)
        assert set(losses) == {"loss_dagl", "loss"}
        torch.testing.assert_close(losses["loss"], losses["loss_dagl"])
    finally:
        method.options = SALCRConfig(**{**dataclasses.asdict(method.options), "fgsal": True, "gpcr": True})
        method._pending = []


def test_two_stage_smoke_run_and_checkpoint(tmp_path, synthetic_root) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(CONFIG, [*SMALL, "cluster.eps=0.7", f"data.root={synthetic_root}"])
    trainer = build_trainer(cfg, run_dir=tmp_path)
    state = trainer.fit()
    stages = [record["stage"] for record in state.history]
    assert stages == ["intra", "cross"]
    assert "loss/loss_v" in state.history[0] and "loss/loss_dagl" in state.history[1]
    assert np.isfinite(state.history[1]["loss/loss"])
    model, info = load_model_from_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert info["epoch"] == 2 and info["method_state"]["phase"] == "cross"
    x = torch.randn(2, 3, *model.default_cfg["input_size"][1:])
    assert model.extract(x, "infrared").shape == (2, model.default_cfg["embed_dim"])


def test_stage_starts_share_stems_then_reset_the_part_head() -> None:
    from types import SimpleNamespace

    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    method = build_method(cfg, model=build_model("salcr", variant="tiny"))
    model = method.model
    assert not torch.equal(model.visible_stem.conv1.weight, model.thermal_stem.conv1.weight)
    tokens = model.part_pool.tokens.detach().clone()
    method.on_stage_start(SimpleNamespace(epoch=0, stage_index=0))  # type: ignore[arg-type]
    assert torch.equal(model.visible_stem.conv1.weight, model.thermal_stem.conv1.weight)
    assert torch.equal(model.part_pool.tokens, tokens)  # intra stage: part head untouched
    method.on_stage_start(SimpleNamespace(epoch=4, stage_index=1))  # type: ignore[arg-type]
    assert not torch.equal(model.part_pool.tokens, tokens)  # cross stage: re-created


def test_grad_checkpointing_option_switches_the_trunk() -> None:
    cfg = load_config(CONFIG, ["method_options.grad_checkpointing=true"])
    method = build_method(cfg, model=build_model("salcr", variant="tiny"))
    assert method.model.trunk.grad_checkpointing
    assert not build_method(
        load_config(CONFIG), model=build_model("salcr", variant="tiny")
    ).model.trunk.grad_checkpointing
