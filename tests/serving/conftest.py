"""Shared fixtures for the serving tests: manifests, a tiny torch model, one tiny exported model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vireid.serving.runtime import InputSpec, Manifest

TINY_H, TINY_W, TINY_D = 32, 16, 12


def make_manifest(**overrides: Any) -> Manifest:
    """A valid manifest for a (3, 32, 16) → 12-d model, with fields overridden."""
    fields: dict[str, Any] = {
        "method": "salcr",
        "variant": "tiny",
        "embedding_dim": TINY_D,
        "input": InputSpec(
            height=TINY_H,
            width=TINY_W,
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            interpolation="bilinear",
        ),
        "flip_average": True,
        "normalize_output": True,
        "graphs": {"visible": "visible.onnx", "infrared": "infrared.onnx"},
        "input_name": "images",
        "output_name": "embeddings",
        "model_version": hashlib.sha256(b"tiny").hexdigest()[:16],
        "source_checkpoint": None,
        "pretrained": None,
        "randomly_initialised": True,
        "created_at": "2025-01-01T00:00:00+00:00",
        "vireid_version": "0.1.0",
        "opset": 18,
    }
    fields.update(overrides)
    return Manifest(**fields)


@pytest.fixture
def manifest_factory() -> Callable[..., Manifest]:
    return make_manifest


def build_tiny_model(method: str = "salcr") -> Any:
    """A small two-stem CNN following Contract 1 (default_cfg, extract, export_module)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class _View(nn.Module):
        def __init__(self, owner: nn.Module, modality: str) -> None:
            super().__init__()
            self.owner, self.modality = owner, modality

        def forward(self, x: Any) -> Any:
            return self.owner.extract(x, self.modality)

    class TinyReID(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            gen = torch.Generator().manual_seed(0)

            def stem() -> nn.Module:
                return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())

            self.visible_stem, self.infrared_stem = stem(), stem()
            self.trunk = nn.Sequential(
                nn.Conv2d(8, TINY_D, 3, 1, 1, bias=False), nn.BatchNorm2d(TINY_D), nn.ReLU()
            )
            self.neck = nn.BatchNorm1d(TINY_D)
            for m in self.modules():  # non-trivial BN statistics so folding is really exercised
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                    m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                    m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                    m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            self.default_cfg = {
                "method": method,
                "variant": "tiny",
                "input_size": (3, TINY_H, TINY_W),
                "mean": (0.485, 0.456, 0.406),
                "std": (0.229, 0.224, 0.225),
                "interpolation": "bilinear",
                "flip_average": True,
                "embed_dim": TINY_D,
            }

        def extract(self, x: Any, modality: str) -> Any:
            stem = self.visible_stem if modality == "visible" else self.infrared_stem
            f = self.trunk(stem(x))
            g = (f.pow(3).mean(dim=(2, 3)) + 1e-12).pow(1.0 / 3.0)
            return self.neck(g)

        def export_module(self, modality: str) -> nn.Module:
            return _View(self, modality).eval()

    return TinyReID().eval()


@pytest.fixture
def tiny_model_factory() -> Callable[..., Any]:
    """``factory(method="salcr")`` → a fresh eval-mode tiny model (needs torch)."""
    return build_tiny_model


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """(model_dir, torch model): the tiny model exported once for the whole session."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from vireid.serving.export import _export

    model = build_tiny_model()
    out = tmp_path_factory.mktemp("export") / "model"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_export, "_load_model", lambda method, **kwargs: model)
        _export.export_model("salcr", out_dir=out, variant="tiny")
    yield out, model
