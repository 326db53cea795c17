"""SDCLMethod on the tiny model and synthetic data: config, heads, steps, memories, stages, smoke run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vireid.training.engine import load_config, load_model_from_checkpoint, prepare_data, train
from vireid.training.methods import METHODS, DistInfo, RefreshContext, ReIDMethod, build_method
from vireid.training.methods.sdcl import (
    SDCLMethod,
    SDCLStageConfig,
    enable_activation_checkpointing,
    pk_stream,
)
from vireid.training.models import build_model

CONFIG = Path(__file__).resolve().parents[4] / "configs" / "sdcl_tiny.yaml"
SMALL = [
    "data.synthetic.num_identities=12",
    # test_stage_two_cra_and_shared_memory needs CRA to label at least one visible image from the
    # random-init model, which depends on the drawn data: with the dye-driven infrared rendition (2026-12)
    # data seed 0 gives no CRA agreement (fallback to per-modality memories), seed 1 does.
    "data.synthetic.seed=1",
    "method_options.clusters_per_batch=2",
    "method_options.num_instances=4",
    "cluster.k1=6",
    "cluster.k2=2",
    "stages.0.iters=2",
    "stages.1.iters=2",
    "stages.1.options.rgb_k1=5",
    "eval.plots=false",
    "logging.progress=false",
    "logging.tensorboard=false",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    run_dir = tmp_path_factory.mktemp("sdcl")
    cfg = load_config(CONFIG, SMALL)
    data = prepare_data(cfg.data, run_dir=run_dir, dist_info=DistInfo())
    torch.manual_seed(0)
    return cfg, data, build_method(cfg)


def _ctx(cfg, method, data, *, stage_index=0, epoch=0, stage_epoch=0):  # type: ignore[no-untyped-def]
    return RefreshContext(
        config=cfg,
        model=method.model,
        forward=lambda *a, **k: method.model.forward_train(*a, **k),
        extract=lambda *a, **k: None,
        records=data.records,
        stage=cfg.stages[stage_index],
        stage_index=stage_index,
        stage_epoch=stage_epoch,
        epoch=epoch,
        seed=5,
        device=torch.device("cpu"),
        input_size=(64, 32),
    )


def test_registered_and_protocol() -> None:
    assert METHODS["sdcl"] is SDCLMethod
    cfg = load_config(CONFIG)
    assert isinstance(build_method(cfg), ReIDMethod)


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match=r"model\.arch"):
        build_method(load_config(CONFIG, ["model.arch=salcr"]))
    with pytest.raises(ValueError, match="kind"):
        SDCLStageConfig(kind="both")
    with pytest.raises(ValueError, match="reload"):
        SDCLStageConfig(reload="best_test")
    assert SDCLStageConfig(reload="checkpoint:/x/last.pt").reload_path == "/x/last.pt"
    with pytest.raises(KeyError, match="valid keys"):
        build_method(load_config(CONFIG, ["method_options.nope=1"]))


def test_head_shapes_and_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("sdcl", variant="tiny")
    x_rgb, x_ir = torch.randn(4, 3, 64, 32), torch.randn(2, 3, 64, 32)
    torch.manual_seed(1)
    out = model.forward_train(x_rgb, x_ir)
    assert out["f_d"].shape == out["f_s"].shape == (6, 64) and out["split"] == (4, 2)
    (out["f_d"].square().sum() + out["f_s"].sum()).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    assert enable_activation_checkpointing(model) == 4  # 2 backbone blocks + 2 head blocks
    torch.manual_seed(1)
    out2 = model.forward_train(x_rgb, x_ir)
    (out2["f_d"].square().sum() + out2["f_s"].sum()).backward()
    for name, grad in plain.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, msg=name)
    assert set(model.state_dict()) == set(build_model("sdcl", variant="tiny").state_dict())
    model.eval()
    assert model.extract(x_ir, "infrared").shape == (2, 128)


def test_pk_stream_whole_batches_of_identities() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1, -1, 2, 2])
    cams = ["a", "b", "a", "a", "b", "b", "a", "a", "a", "b"]
    stream = pk_stream(
        labels, cams, num_instances=3, batch_size=6, num_batches=5, rng=np.random.default_rng(0)
    )
    assert stream.shape == (30,) and (labels[stream] >= 0).all()
    groups = labels[stream].reshape(-1, 3)
    assert (groups == groups[:, :1]).all()  # K consecutive indices share a label
    with pytest.raises(ValueError):
        pk_stream(
            np.full(3, -1),
            ["a"] * 3,
            num_instances=2,
            batch_size=2,
            num_batches=1,
            rng=np.random.default_rng(0),
        )


def test_stage_one_step_updates_memories_and_losses(setup) -> None:  # type: ignore[no-untyped-def]
    cfg, data, method = setup
    ctx = _ctx(cfg, method, data, epoch=3)  # epoch 3 >= het_start 2, odd: infrared -> visible
    labels = method.refresh(ctx)
    assert set(method.cluster_memories) == {
        "visible/deep",
        "visible/shallow",
        "infrared/deep",
        "infrared/shallow",
    }
    k_v = labels.num_clusters("visible")
    assert method.cluster_memories["visible/deep"].features.shape == (k_v, 64)
    n_v = len(data.records["visible"])
    assert method.instance_memories["visible/shallow"].features.shape == (n_v, 64)  # outliers included
    batch = next(iter(method.epoch_batches(ctx)))
    assert batch["rgb"].shape == batch["ir"].shape == (8, 3, 64, 32)
    inst_before = method.instance_memories["infrared/deep"].features.clone()
    cm_before = method.cluster_memories["infrared/deep"].features.clone()
    losses = method.training_step(batch, forward=ctx.forward)
    assert set(losses) == {"loss_cc_deep", "loss_cc_shallow", "loss_hom", "loss_het", "loss"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_hom"] > 0
    w = method.stage_options[0]
    total = losses["loss_cc_deep"] + losses["loss_cc_shallow"] + w.hom_weight * losses["loss_hom"]
    torch.testing.assert_close(losses["loss"], total + w.het_weight * losses["loss_het"])
    losses["loss"].backward()
    method.after_backward()
    changed = (method.instance_memories["infrared/deep"].features != inst_before).any(dim=1)
    assert set(np.flatnonzero(changed.numpy())) == set(batch["ir_index"].tolist())
    touched = (method.cluster_memories["infrared/deep"].features != cm_before).any(dim=1)
    assert set(np.flatnonzero(touched.numpy())) == set(batch["ir_label"].tolist())


def test_stage_two_cra_and_shared_memory(setup) -> None:  # type: ignore[no-untyped-def]
    cfg, data, method = setup
    ctx = _ctx(cfg, method, data, stage_index=1, epoch=4)
    labels = method.refresh(ctx)
    cross = labels.cross_labels["visible"]
    k_r = labels.num_clusters("infrared")
    assert cross.shape == (len(data.records["visible"]),) and cross.max() < k_r
    assert ((cross == -1) | (labels.labels["visible"] != -1)).all()  # DBSCAN outliers are never trained
    assert method.cluster_memories["visible/deep"] is method.cluster_memories["infrared/deep"]
    assert method.cluster_memories["visible/shallow"].features.shape == (k_r, 64)
    np.testing.assert_array_equal(method.train_labels["visible"], cross)
    state = method.state_dict()
    method.load_state_dict(state)
    assert method.cluster_memories["visible/deep"] is method.cluster_memories["infrared/deep"]


def test_reload_checkpoint_option(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, data, _ = setup
    saved = build_model("sdcl", variant="tiny")
    torch.save({"model": saved.state_dict()}, tmp_path / "stage1.pt")
    cfg2 = load_config(CONFIG, [*SMALL, f"stages.1.options.reload=checkpoint:{tmp_path / 'stage1.pt'}"])
    method = build_method(cfg2)
    method.on_stage_start(_ctx(cfg2, method, data, stage_index=1, epoch=4))
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(method.model.state_dict()[name], value)


def test_smoke_two_stages_and_checkpoint(tmp_path) -> None:
    cfg = load_config(CONFIG, [*SMALL, "stages.0.epochs=1", "stages.1.epochs=1", "eval.every=1"])
    state = train(cfg, run_dir=tmp_path)
    assert state.epoch == 2 and state.global_step == 4
    assert [row["stage"] for row in state.history] == ["intra", "cross"]
    assert "cra/agreement" in state.history[1] and "eval/mAP" in state.history[1]
    model, rest = load_model_from_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert rest["training_method"] == "sdcl" and model.default_cfg["embed_dim"] == 128


# ------------------------------------------------------------------------------------------ official order


class OfficialCM(torch.autograd.Function):
    """cluster-contrast's ``CM`` op as SDCL ships it: gradient on the memory as it is when the backward
    reaches this term, then the per-sample update inside the backward (methods.md §0.4)."""

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


def _official_cc(f, y, memory):  # type: ignore[no-untyped-def]
    logits = OfficialCM.apply(torch.nn.functional.normalize(f, dim=1), y, memory, 0.2) / 0.05
    return torch.nn.functional.cross_entropy(logits, y)


def _official_neighbor(f_d, f_s, anchor_rows, wise, a, b):  # type: ignore[no-untyped-def]
    """Official CNL for anchors of modality a against memory b: masks from the memories under no_grad,
    then the live sims against ``wise[b].data`` (a reference the later in-place update changes)."""
    with torch.no_grad():
        sim_d = wise[a, "deep"][anchor_rows].mm(wise[b, "deep"].t())
        sim_s = wise[a, "shallow"][anchor_rows].mm(wise[b, "shallow"].t())
        mask = (sim_d > sim_d.max(dim=1, keepdim=True)[0] * 0.9) & (
            sim_s > sim_s.max(dim=1, keepdim=True)[0] * 0.9
        )
        num = mask.sum(dim=1) + 1
    out = []
    for f, depth in ((f_d, "deep"), (f_s, "shallow")):
        sim = torch.nn.functional.normalize(f, dim=1).mm(wise[b, depth].data.t())
        score = torch.softmax(sim / 0.05, dim=1).clamp_min(1e-8)
        out.append((-score.log().mul(mask).sum(dim=1)).div(num).mean())
    return out[0] + 0.5 * out[1]


def _official_sdcl_step(cluster, wise, feats, batch, *, shared, epoch, weights):  # type: ignore[no-untyped-def]
    """The official SDCL iteration (trainers.py) on the same inputs, written out in its order."""
    f_d, f_s = (x.clone().requires_grad_(True) for x in feats)
    n = 2 * batch["rgb_label"].numel()
    y_v, y_r = batch["rgb_label"].repeat(2), batch["ir_label"]
    i_v, i_r = batch["rgb_index"].repeat(2), batch["ir_index"]
    mem = {k: v.clone() for k, v in cluster.items()}
    if shared:  # stage 2: memory_rgb = memory_ir = the shared memory of a depth
        mem["infrared", "deep"], mem["infrared", "shallow"] = (
            mem["visible", "deep"],
            mem["visible", "shallow"],
        )
    # cluster terms in the official construction order: IR-shallow, V-shallow, IR-deep, V-deep
    loss_ir_s = _official_cc(f_s[n:], y_r, mem["infrared", "shallow"])
    loss_rgb_s = _official_cc(f_s[:n], y_v, mem["visible", "shallow"])
    loss_ir = _official_cc(f_d[n:], y_r, mem["infrared", "deep"])
    loss_rgb = _official_cc(f_d[:n], y_v, mem["visible", "deep"])
    w = {k: v.clone() for k, v in wise.items()}
    rows = {"visible": (f_d[:n], f_s[:n], i_v), "infrared": (f_d[n:], f_s[n:], i_r)}
    hom = sum(_official_neighbor(*rows[m][:2], rows[m][2], w, m, m) for m in ("visible", "infrared"))
    a, b = ("visible", "infrared") if epoch % 2 == 0 else ("infrared", "visible")
    het = (0.1 if a == "visible" else 1.0) * _official_neighbor(*rows[a][:2], rows[a][2], w, a, b)
    loss = loss_ir + loss_rgb + loss_rgb_s + loss_ir_s + weights[0] * hom + weights[1] * het
    with torch.no_grad():  # updateEM before loss.backward(): raw features, EMA 0.9, in batch order
        for m in ("visible", "infrared"):
            for depth, x in zip(("deep", "shallow"), rows[m][:2], strict=True):
                for xi, yi in zip(x, rows[m][2], strict=True):
                    w[m, depth][yi] = 0.9 * w[m, depth][yi] + 0.1 * xi
                    w[m, depth][yi] /= w[m, depth][yi].norm()
    loss.backward()
    return loss.detach(), (f_d.grad, f_s.grad), mem, w


def _vireid_sdcl_step(cfg, cluster, wise, feats, batch, *, shared, epoch):  # type: ignore[no-untyped-def]
    from vireid.training.memory import ClusterMemory, InstanceMemory

    method = SDCLMethod(cfg, torch.nn.Linear(1, 1))
    stage = 1 if shared else 0
    method._epoch, method._stage = epoch, method.stage_options[stage]
    mems = {k: ClusterMemory(v, temperature=0.05, momentum=0.2) for k, v in cluster.items()}
    if shared:
        mems["infrared", "deep"], mems["infrared", "shallow"] = (
            mems["visible", "deep"],
            mems["visible", "shallow"],
        )
    method.cluster_memories = {f"{m}/{d}": mem for (m, d), mem in mems.items()}
    method.instance_memories = {
        f"{m}/{d}": InstanceMemory(v, momentum=0.9, temperature=0.05) for (m, d), v in wise.items()
    }
    f_d, f_s = (x.clone().requires_grad_(True) for x in feats)
    b = batch["rgb_label"].numel()
    fake = {"rgb": torch.zeros(b, 1), "rgb_aug": torch.zeros(b, 1), "ir": torch.zeros(b, 1), **batch}
    losses = method.training_step(fake, forward=lambda *a, **k: {"f_d": f_d, "f_s": f_s})
    losses["loss"].backward()
    method.after_backward()
    mem = {k: method.cluster_memories[f"{k[0]}/{k[1]}"].features for k in cluster}
    inst = {k: method.instance_memories[f"{k[0]}/{k[1]}"].features for k in wise}
    return losses["loss"].detach(), (f_d.grad, f_s.grad), mem, inst


def _hand_sized_sdcl(seed: int = 4):  # type: ignore[no-untyped-def]
    """3 visible images per view (2 views), 3 infrared; 3 clusters; 6 / 5 instance rows; D = 4."""
    g = torch.Generator().manual_seed(seed)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=1)  # noqa: E731
    keys = [(m, d) for m in ("visible", "infrared") for d in ("deep", "shallow")]
    cluster = {k: unit(3, 4) for k in keys}
    wise = {(m, d): unit(6 if m == "visible" else 5, 4) for m, d in keys}
    feats = (torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g))
    batch = {
        "rgb_label": torch.tensor([0, 2, 2]),
        "ir_label": torch.tensor([1, 1, 2]),
        "rgb_index": torch.tensor([0, 3, 3]),
        "ir_index": torch.tensor([4, 1, 4]),
    }
    return cluster, wise, feats, batch


@pytest.mark.parametrize("shared", [False, True], ids=["stage1-instance-order", "stage2-shared-memory"])
def test_step_reproduces_the_official_update_order(shared: bool) -> None:
    """Stage 1: the instance memories are updated before the backward and the neighbour gradients read the
    updated banks. Stage 2 adds the shared memories: visible rows update them first, the infrared gradient
    sees the updated memory (issue 11, methods.md §0.4 / §B.4.1)."""
    cfg = load_config(CONFIG, ["method_options.het_start=2", "memory.momentum=0.2"])
    weights = (0.1, 0.1) if shared else (1.0, 0.5)
    epoch = 3  # L_hom and L_het (infrared -> visible) both active
    cluster, wise, feats, batch = _hand_sized_sdcl()
    ref_loss, ref_grads, ref_mem, ref_inst = _official_sdcl_step(
        cluster, wise, feats, batch, shared=shared, epoch=epoch, weights=weights
    )
    loss, grads, mem, inst = _vireid_sdcl_step(cfg, cluster, wise, feats, batch, shared=shared, epoch=epoch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)  # a sum of ~50: float rounding
    for ours, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    for key in cluster:
        torch.testing.assert_close(mem[key], ref_mem[key], rtol=0, atol=1e-6)
        torch.testing.assert_close(inst[key], ref_inst[key], rtol=0, atol=1e-6)

    # the earlier order gives the same loss and memories in stage 1 but other gradients
    old = load_config(
        CONFIG, ["method_options.het_start=2", "memory.momentum=0.2", "memory.update_order=pre_update"]
    )
    _, old_grads, old_mem, _ = _vireid_sdcl_step(old, cluster, wise, feats, batch, shared=shared, epoch=epoch)
    assert max(float((o - r).abs().max()) for o, r in zip(old_grads, ref_grads, strict=True)) > 1e-4
    if shared:
        assert float((old_mem["visible", "deep"] - ref_mem["visible", "deep"]).abs().max()) > 1e-3
