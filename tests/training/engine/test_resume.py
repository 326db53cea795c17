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
