"""build_model (docs/architecture.md Contract 1)."""

from __future__ import annotations

import pytest
import torch

from vireid.training.models import MODEL_METHODS, TwoStreamResNet50, ViTICS, build_model

CONTRACT_KEYS = {
    "method",
    "variant",
    "input_size",
    "mean",
    "std",
    "interpolation",
    "flip_average",
    "embed_dim",
}


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="salcr, sdcl"):
        build_model("baseline")
    with pytest.raises(KeyError, match="full, tiny"):
        build_model("salcr", variant="small")


@pytest.mark.parametrize(("method", "cls"), [("salcr", TwoStreamResNet50), ("sdcl", ViTICS)])
def test_tiny_models_follow_contract(method: str, cls: type) -> None:
    assert method in MODEL_METHODS
    torch.manual_seed(0)
    model = build_model(method, variant="tiny")
    assert isinstance(model, cls)
    assert model.training
    cfg = model.default_cfg
    assert set(cfg) == CONTRACT_KEYS
    assert (cfg["method"], cfg["variant"]) == (method, "tiny")
    model.eval()
    _, h, w = cfg["input_size"]
    x = torch.randn(2, 3, h, w)
    for modality in ("visible", "infrared"):
        with torch.no_grad():
            emb = model.export_module(modality)(x)
        assert emb.shape == (2, cfg["embed_dim"])
        assert emb.dtype == torch.float32
        assert torch.isfinite(emb).all()
