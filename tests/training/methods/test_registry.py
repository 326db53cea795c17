"""METHODS / build_method, and one smoke run per registered method (house-style §34)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vireid.training.engine import TrainConfig, load_config, load_model_from_checkpoint, train
from vireid.training.methods import METHODS, ReIDMethod, build_method

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "baseline_synthetic.yaml"
ARCH = {"sdcl": "sdcl"}  # backbone of each method (default: the SALCR two-stream ResNet)


def test_unknown_method_lists_valid_names() -> None:
    with pytest.raises(KeyError, match=r"valid methods: .*baseline"):
        build_method(TrainConfig(method="nope"))


def test_baseline_is_registered_and_follows_the_protocol() -> None:
    assert "baseline" in METHODS
    method = build_method(load_config(CONFIG))
    assert isinstance(method, ReIDMethod)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from vireid.training.data import generate_synthetic

    root = tmp_path_factory.mktemp("smoke") / "synthetic"
    generate_synthetic(root, num_identities=10, images_per_camera=4, seed=3)
    return root


@pytest.mark.parametrize("name", sorted(METHODS))
def test_smoke_one_epoch(name, synthetic_root, tmp_path) -> None:
    cfg = load_config(
        CONFIG,
        [
            f"method={name}",
            "method_options={}",  # each method's defaults
            f"model.arch={ARCH.get(name, 'salcr')}",
            f"data.root={synthetic_root}",
            "stages.0.epochs=1",
            "stages.0.iters=2",
            "cluster.k1=6",
            "cluster.k2=2",
            "eval.every=1",
            "eval.plots=false",
            "logging.progress=false",
        ],
    )
    state = train(cfg, run_dir=tmp_path)
    assert state.epoch == 1 and state.global_step == 2
    assert "eval/mAP" in state.history[-1]
    model, rest = load_model_from_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert rest["training_method"] == name and not model.training
    assert (tmp_path / "config.yaml").is_file() and any((tmp_path / "tb").iterdir())
