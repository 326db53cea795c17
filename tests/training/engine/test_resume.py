"""A baseline run on synthetic data killed mid-epoch resumes to the same end state as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vireid.training.engine import last_checkpoint, load_checkpoint, load_config, train

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "baseline_synthetic.yaml"


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from vireid.training.data import generate_synthetic

    root = tmp_path_factory.mktemp("resume") / "synthetic"
    generate_synthetic(root, num_identities=12, images_per_camera=4, seed=5)
    return root


def _tensors_equal(a, b, where: str = "") -> None:  # type: ignore[no-untyped-def]
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _tensors_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_kill_mid_epoch_then_resume_is_bit_exact(tmp_path, synthetic_root, stop_at, caplog) -> None:
    cfg = load_config(
        CONFIG,
        [
            f"data.root={synthetic_root}",
            "stages.0.epochs=2",
            "stages.0.iters=3",
            "method_options.clusters_per_batch=2",
            "cluster.k1=6",
            "cluster.k2=2",
            "eval.every=2",
            "logging.progress=false",
        ],
    )
    full = train(cfg, run_dir=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=tmp_path / "killed", extra_callbacks=[stop_at(epoch=1, step=2)])
    assert load_checkpoint(last_checkpoint(tmp_path / "killed"))["epoch"] == 1
    caplog.set_level("INFO")
    resumed = train(cfg, run_dir=tmp_path / "killed", resume=True)
    assert any("resuming from" in r.getMessage() for r in caplog.records)

    a, b = (load_checkpoint(last_checkpoint(tmp_path / name)) for name in ("full", "killed"))
    for key in ("model", "optimizer", "method_state", "epoch"):
        _tensors_equal(a[key], b[key], key)
    assert resumed.global_step == full.global_step == 6
    assert resumed.history == full.history  # same losses, cluster counts and eval numbers
    pictures = sorted(p.name for p in (tmp_path / "killed" / "eval" / "epoch_0002").iterdir())
    assert {"cmc.png", "rank_list.png", "results.json"} <= set(pictures)


def test_resume_around_an_optimizer_reset_is_bit_exact(tmp_path, synthetic_root, stop_at, caplog) -> None:
    """Stage ``b`` has ``reset_optimizer``: a kill at the stage boundary resumes into the same reset,
    a kill later in the stage resumes without a second reset; both end as the uninterrupted run."""
    stages = "stages=[{name: a, epochs: 1, iters: 2}, {name: b, epochs: 2, iters: 2, reset_optimizer: true}]"
    cfg = load_config(
        CONFIG,
        [
            f"data.root={synthetic_root}",
            stages,
            "method_options.clusters_per_batch=2",
            "cluster.k1=6",
            "cluster.k2=2",
            "eval.every=0",
            "logging.progress=false",
        ],
    )
    assert [s.reset_optimizer for s in cfg.stages] == [False, True]
    caplog.set_level("INFO")
    full = train(cfg, run_dir=tmp_path / "full")
    assert sum("optimizer state reset" in r.getMessage() for r in caplog.records) == 1
    reference = load_checkpoint(last_checkpoint(tmp_path / "full"))
    for name, epoch, step, resets in (("boundary", 1, 0, 1), ("mid_stage", 2, 1, 0)):
        run_dir = tmp_path / name
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run_dir=run_dir, extra_callbacks=[stop_at(epoch=epoch, step=step)])
        saved = load_checkpoint(last_checkpoint(run_dir))
        assert saved["epoch"] == epoch
        # Adam steps in the checkpoint: stage a's 2 at the boundary, 2 since the reset mid-stage
        assert {int(s["step"]) for s in saved["optimizer"]["state"].values()} == {2}
        caplog.clear()
        resumed = train(cfg, run_dir=run_dir, resume=True)
        assert sum("optimizer state reset" in r.getMessage() for r in caplog.records) == resets, name
        ours = load_checkpoint(last_checkpoint(run_dir))
        for key in ("model", "optimizer", "method_state", "epoch"):
            _tensors_equal(reference[key], ours[key], f"{name}: {key}")
        assert resumed.global_step == full.global_step == 6
        assert resumed.history == full.history
