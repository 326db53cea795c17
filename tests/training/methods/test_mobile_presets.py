"""The mobile presets (configs/{salcr,sdcl}_mobile.yaml) run both stages from the packaged ImageNet start,
keep a checkpoint per stage, and the trained model exports at the run's input size."""

from __future__ import annotations

from pathlib import Path

import pytest

from vireid.training.engine import load_config, load_model_from_checkpoint, train

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from vireid.training.data import generate_synthetic

    root = tmp_path_factory.mktemp("mobile") / "synthetic"
    generate_synthetic(root, num_identities=16, images_per_camera=4, size=(96, 48), seed=5)
    return root


@pytest.mark.parametrize("method", ["salcr", "sdcl"])
def test_preset_runs_both_stages_and_exports(method: str, synthetic_root: Path, tmp_path: Path) -> None:
    cfg = load_config(
        CONFIGS / f"{method}_mobile.yaml",
        [
            f"data.root={synthetic_root}",
            "model.input_size=[96, 48]",
            "stages.0.epochs=1",
            "stages.1.epochs=1",
            "stages.0.iters=1",
            "stages.1.iters=1",
            "cluster.k1=6",
            "cluster.k2=2",
            "eval.every=0",
            "collapse.enabled=false",
        ],
    )
    assert (cfg.model.variant, cfg.model.pretrained) == ("mobile", "imagenet")
    run = tmp_path / "run"
    state = train(cfg, run_dir=run)
    assert state.epoch == 2
    ckpts = run / "checkpoints"
    assert {p.name for p in ckpts.glob("*.pt")} == {"last.pt", "intra.pt", "cross.pt"}
    model, rest = load_model_from_checkpoint(ckpts / "cross.pt")
    assert model.default_cfg["input_size"] == (3, 96, 48) and rest["variant"] == "mobile"

    from vireid.serving.export import export_model

    result = export_model(method, out_dir=tmp_path / "model", checkpoint=ckpts / "cross.pt")
    manifest = result.manifest
    assert (manifest.variant, manifest.input.height, manifest.input.width) == ("mobile", 96, 48)
    assert not manifest.randomly_initialised and manifest.source_checkpoint == str(ckpts / "cross.pt")
    assert min(check.min_cosine_vs_torch for check in result.checks.values()) >= 0.9999


@pytest.mark.slow
def test_sdcl_mobile_learns_across_modalities(tmp_path: Path) -> None:
    """One seed of the learning benchmark (benchmarks/learning.py; about 10 minutes on 2 cores): held-out
    infrared -> visible mAP rises from the ImageNet start through stage 1 and again through stage 2."""
    from vireid.training.data import camera_folders
    from vireid.training.evaluation import evaluate_cross_modality
    from vireid.training.models import build_model

    seed = 102  # measured: 0.102 -> 0.159 -> 0.190 (docs/benchmarks.md, "Learning")
    cfg = load_config(
        CONFIGS / "sdcl_mobile.yaml", [f"seed={seed}", f"data.synthetic.seed={seed}", "eval.every=0"]
    )
    train(cfg, run_dir=tmp_path)
    held_out = [r for r in camera_folders(tmp_path / "data" / "synthetic", split="test") if r.pid is not None]
    query = [r for r in held_out if r.modality == "infrared"]
    gallery = [r for r in held_out if r.modality == "visible"]
    size = cfg.model.input_size
    models = {
        "start": build_model("sdcl", variant="mobile", pretrained="imagenet", input_size=size),
        "stage1": load_model_from_checkpoint(tmp_path / "checkpoints" / "intra.pt")[0],
        "stage2": load_model_from_checkpoint(tmp_path / "checkpoints" / "cross.pt")[0],
    }
    mAP = {name: evaluate_cross_modality(m.eval(), query, gallery).mAP for name, m in models.items()}
    assert mAP["stage1"] >= mAP["start"] + 0.02, mAP
    assert mAP["stage2"] > mAP["stage1"], mAP
