"""Trainer loop: stages, events, bit-exact resume, collapse guard, LR schedule (with an in-memory method)."""

from __future__ import annotations

import logging

import pytest
import torch

from vireid.training.engine import (
    Callback,
    NonFiniteLossError,
    OptimConfig,
    Trainer,
    build_lr_scheduler,
    build_optimizer,
    load_checkpoint,
    lr_factor,
)
from vireid.training.engine._callbacks import scheduler_epoch


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert torch.equal(a.method.memory, b.method.memory)  # type: ignore[attr-defined]
    oa, ob = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for key in oa:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa[key][name], ob[key][name])


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def before_train(self, trainer: Trainer) -> None:
        self.events.append("before_train")

    def before_epoch(self, trainer: Trainer) -> None:
        assert trainer.labels is not None
        self.events.append(f"before_epoch{trainer.state.epoch}")

    def after_epoch(self, trainer: Trainer) -> None:
        self.events.append(f"after_epoch{trainer.state.epoch}")

    def after_step(self, trainer: Trainer, losses) -> None:  # type: ignore[no-untyped-def]
        assert set(losses) == {"loss", "ce"}
        self.events.append("step")

    def after_train(self, trainer: Trainer) -> None:
        self.events.append("after_train")


def test_events_stages_and_history(tmp_path, fake_method, trainer_factory) -> None:
    recorder = Recorder()
    method = fake_method()
    trainer = trainer_factory(method, run_dir=tmp_path, epochs=(1, 2), iters=3, callbacks=(recorder,))
    state = trainer.fit()
    assert state.epoch == 3 and state.global_step == 9
    assert recorder.events[0] == "before_train" and recorder.events[-1] == "after_train"
    assert recorder.events[1:6] == ["before_epoch0", "step", "step", "step", "after_epoch1"]
    assert method.stage_starts == [0, 1]  # first epoch of each stage only
    assert [row["stage"] for row in state.history] == ["s0", "s1", "s1"]
    assert state.history[0]["clusters/visible"] == 4.0 and "loss/loss" in state.history[0]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 3 and ckpt["stage"] == "s1" and ckpt["format_version"] == 1
    assert {"optimizer", "scheduler", "method_state", "rng", "trainer_state", "config"} <= set(ckpt)


def test_pseudo_label_refresh_says_what_it_does_at_first_and_at_each_stage_start(
    tmp_path, fake_method, trainer_factory, caplog
) -> None:
    trainer = trainer_factory(fake_method(), run_dir=tmp_path, epochs=(1, 2), iters=1)
    with caplog.at_level(logging.INFO, logger="vireid.training.engine"):
        trainer.fit()
    lines = [r.getMessage() for r in caplog.records if "pseudo-labels:" in r.getMessage()]
    sizes = ", ".join(f"{len(rows)} {modality}" for modality, rows in trainer.records.items())
    assert len(lines) == 2  # epoch 1 (first, stage s0) and epoch 2 (stage s1 starts); not epoch 3
    assert lines[0].startswith("epoch 1/3 (stage s0): pseudo-labels:") and f"({sizes})" in lines[0]
    assert lines[1].startswith("epoch 2/3 (stage s1): pseudo-labels:")


def test_killed_mid_epoch_resumes_to_identical_state(tmp_path, fake_method, trainer_factory, stop_at) -> None:
    full = trainer_factory(fake_method(), run_dir=tmp_path / "full")
    full.fit()

    killed = trainer_factory(
        fake_method(), run_dir=tmp_path / "killed", callbacks=(stop_at(epoch=2, step=3),)
    )
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    ckpt = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 2  # the interrupted epoch is not in the checkpoint

    resumed = trainer_factory(fake_method(), run_dir=tmp_path / "killed")
    torch.manual_seed(12345)  # a different process state must not matter
    resumed.load_state(ckpt)
    resumed.fit()
    assert resumed.state.epoch == full.state.epoch == 4
    assert resumed.state.global_step == full.state.global_step
    _assert_same_state(full, resumed)


def test_nonfinite_loss_reruns_epoch_with_higher_momentum(
    tmp_path, fake_method, trainer_factory, caplog
) -> None:
    # NaN in epoch 0 unless the guard raised the memory momentum.
    method = fake_method(nan_when=lambda epoch, step, m: epoch == 0 and step == 2 and m is None)
    trainer = trainer_factory(method, run_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        state = trainer.fit()
    assert state.epoch == 4
    assert state.retries == {"0": 1}
    assert state.overrides["0"] == {"momentum": 0.9, "lr_scale": 1.0}
    assert method.seen_momenta[:3] == [(0, None), (0, 0.9), (1, None)]  # override only for the re-run epoch
    assert state.global_step == 4 * 5  # the aborted steps were rolled back
    assert any("re-running epoch 0" in r.getMessage() for r in caplog.records)


def test_cluster_drop_rolls_back_previous_epoch_and_escalates(tmp_path, fake_method, trainer_factory) -> None:
    # Epoch 0 "collapses" the model unless trained with momentum 0.99: epoch 1 then sees 1 cluster.
    method = fake_method(clusters=lambda epoch, m: 1 if epoch == 1 and seen.get(0) != 0.99 else 8)
    seen: dict[int, float | None] = {}
    original_refresh = method.refresh

    def refresh(ctx):  # type: ignore[no-untyped-def]
        seen[ctx.epoch] = ctx.memory_momentum
        return original_refresh(ctx)

    method.refresh = refresh  # type: ignore[method-assign]
    state = trainer_factory(method, run_dir=tmp_path).fit()
    assert state.retries == {"0": 2}
    assert state.overrides["0"]["momentum"] == 0.99
    assert [h["epoch"] for h in state.history] == [0, 1, 2, 3]
    assert all(h["clusters/visible"] == 8.0 for h in state.history)


def test_unrecoverable_collapse_raises(tmp_path, fake_method, trainer_factory) -> None:
    method = fake_method(nan_when=lambda epoch, step, m: epoch == 1)
    with pytest.raises(RuntimeError, match=r"collapsed at epoch 1 after 3 re-runs"):
        trainer_factory(method, run_dir=tmp_path).fit()
    # lr scaled after the momenta ran out
    trainer = trainer_factory(fake_method(nan_when=lambda e, s, m: e == 0), run_dir=tmp_path / "b")
    with pytest.raises(RuntimeError):
        trainer.fit()
    assert trainer.state.overrides["0"] == {"momentum": 0.99, "lr_scale": pytest.approx(0.1)}


def test_bad_first_labels_and_disabled_guard(tmp_path, fake_method, trainer_factory) -> None:
    with pytest.raises(RuntimeError, match=r"cluster.eps"):
        trainer_factory(fake_method(clusters=lambda e, m: 0), run_dir=tmp_path).fit()
    method = fake_method(nan_when=lambda epoch, step, m: epoch == 1)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 step 0"):
        trainer_factory(method, run_dir=tmp_path / "b", guard=False).fit()


def test_lr_schedule() -> None:
    multi = OptimConfig(milestones=(2, 4), gamma=0.1)
    assert [lr_factor(multi, e) for e in range(5)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    step = OptimConfig(name="sgd", schedule="step", step_size=2, gamma=0.5, warmup_epochs=2)
    assert [lr_factor(step, e) for e in range(4)] == pytest.approx([0.5, 1.0, 0.5, 0.5])


@pytest.mark.parametrize(
    "cfg",
    [
        OptimConfig(milestones=(2, 4), gamma=0.1),
        OptimConfig(milestones=(2, 4), gamma=0.1, warmup_epochs=3),
        OptimConfig(name="sgd", schedule="step", step_size=2, gamma=0.5, warmup_epochs=2),
        OptimConfig(schedule="constant", warmup_epochs=4),
        OptimConfig(schedule="step", step_size=20, gamma=0.1),
    ],
)
def test_torch_scheduler_matches_the_closed_form(cfg: OptimConfig) -> None:
    """build_lr_scheduler (torch.optim.lr_scheduler objects) gives lr_factor's LR every epoch."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "initial_lr": 0.5}], lr=0.5)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for epoch in range(45):
        assert scheduler_epoch(scheduler) == epoch
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * lr_factor(cfg, epoch), rel=1e-12)
        optimizer.step()
        scheduler.step()


def test_lr_applied_per_epoch(tmp_path, fake_method, trainer_factory) -> None:
    lrs = []

    class Probe(Callback):
        def before_step(self, trainer: Trainer) -> None:
            if trainer.step_in_epoch == 0:
                lrs.append(trainer.optimizer.param_groups[0]["lr"])

    optim = OptimConfig(lr=1e-2, milestones=(1, 3))
    trainer_factory(fake_method(), run_dir=tmp_path, callbacks=(Probe(),), optim=optim).fit()
    assert lrs == pytest.approx([1e-2, 1e-3, 1e-3, 1e-4])


class OptimizerProbe(Callback):
    """Records ``(epoch, parameter states, Adam step counts)`` before the first step of every epoch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, set[int]]] = []

    def before_step(self, trainer: Trainer) -> None:
        if trainer.step_in_epoch == 0:
            state = trainer.optimizer.state
            steps = {int(s["step"]) for s in state.values()}
            self.seen.append((trainer.state.epoch, len(state), steps))


class FreshOptimizerAt(Callback):
    """Reference for a reset: swaps in a newly built optimizer (same groups, this epoch's LR) at ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def before_epoch(self, trainer: Trainer) -> None:
        if trainer.state.epoch != self.epoch:
            return
        fresh = build_optimizer(trainer.cfg.optim, trainer.method.parameter_groups())
        for new, old in zip(fresh.param_groups, trainer.optimizer.param_groups, strict=True):
            new["lr"] = old["lr"]
        trainer.optimizer = fresh


def test_reset_optimizer_at_stage_start_equals_a_fresh_optimizer(
    tmp_path, fake_method, trainer_factory
) -> None:
    probe = OptimizerProbe()
    optim = OptimConfig(milestones=(1, 3))  # the LR schedule keeps running through the reset
    reset = trainer_factory(
        fake_method(), run_dir=tmp_path / "reset", reset_optimizer=(1,), callbacks=(probe,), optim=optim
    )
    reset.fit()
    params = len(list(reset.model.parameters()))
    # stage s0 = epochs 0-1, s1 = epochs 2-3, 5 steps each: s1 starts empty and counts from 0 again
    assert probe.seen == [(0, 0, set()), (1, params, {5}), (2, 0, set()), (3, params, {5})]
    assert reset.method.stage_starts == [0, 2]  # type: ignore[attr-defined]

    fresh = trainer_factory(
        fake_method(), run_dir=tmp_path / "fresh", callbacks=(FreshOptimizerAt(2),), optim=optim
    )
    fresh.fit()
    _assert_same_state(reset, fresh)
    assert reset.state.history == fresh.state.history
    ours, theirs = reset.optimizer.state_dict(), fresh.optimizer.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]  # same groups, hyperparameters and LR
    assert {int(s["step"]) for s in ours["state"].values()} == {10}  # counted from the reset
    assert {int(s["step"]) for s in theirs["state"].values()} == {10}

    kept = trainer_factory(fake_method(), run_dir=tmp_path / "kept", optim=optim)
    kept.fit()
    assert not torch.equal(kept.model.body[0].weight, reset.model.body[0].weight)  # type: ignore[index]


@pytest.mark.parametrize(
    ("epoch", "step", "resets"),
    [
        (2, 0, 1),  # killed at the stage boundary: the checkpoint holds stage s0's moments
        (2, 3, 1),  # killed inside the stage's first epoch: same checkpoint, the reset is redone
        (3, 2, 0),  # killed mid-stage: the checkpoint holds s1's moments, no second reset
    ],
)
def test_resume_with_reset_optimizer_is_bit_exact(
    tmp_path, fake_method, trainer_factory, stop_at, caplog, epoch, step, resets
) -> None:
    full = trainer_factory(fake_method(), run_dir=tmp_path / "full", reset_optimizer=(1,))
    full.fit()
    killed = trainer_factory(
        fake_method(),
        run_dir=tmp_path / "killed",
        reset_optimizer=(1,),
        callbacks=(stop_at(epoch=epoch, step=step),),
    )
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    ckpt = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == epoch
    assert {int(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {10 if epoch == 2 else 5}

    resumed = trainer_factory(fake_method(), run_dir=tmp_path / "killed", reset_optimizer=(1,))
    torch.manual_seed(12345)  # a different process state must not matter
    resumed.load_state(ckpt)
    with caplog.at_level(logging.INFO):
        resumed.fit()
    assert sum("optimizer state reset" in r.getMessage() for r in caplog.records) == resets
    assert resumed.state.global_step == full.state.global_step == 20
    assert resumed.state.history == full.state.history
    _assert_same_state(full, resumed)


def test_stage_checkpoints_hold_the_last_epoch_of_each_stage(trainer_factory, fake_method, tmp_path) -> None:  # type: ignore[no-untyped-def]
    trainer = trainer_factory(fake_method(), run_dir=tmp_path, epochs=(2, 3), iters=2)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    class Snapshot(Callback):
        def after_epoch(self, trainer: Trainer) -> None:
            seen[trainer.state.epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer.callbacks.append(Snapshot())
    trainer.fit()
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["last.pt", "s0.pt", "s1.pt"]
    for name, epoch in (("s0", 2), ("s1", 5)):
        ckpt = load_checkpoint(ckpts / f"{name}.pt")
        assert ckpt["epoch"] == epoch
        for key, value in seen[epoch].items():
            assert torch.equal(ckpt["model"][key], value), (name, key)


@pytest.mark.parametrize("name", ["last", "a/b", "", "../x"])
def test_stage_names_must_be_checkpoint_file_names(name: str) -> None:
    from vireid.training.engine import StageConfig

    with pytest.raises(ValueError, match="stage name"):
        StageConfig(name=name)
