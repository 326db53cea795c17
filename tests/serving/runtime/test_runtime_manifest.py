"""Manifest round trip and validation (serving/runtime/_manifest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vireid.serving.runtime import MANIFEST_FILENAME, Manifest

Mutator = Callable[[dict[str, Any]], dict[str, Any]]


def test_round_trip_json_and_dict(manifest_factory: Callable[..., Manifest]) -> None:
    manifest = manifest_factory(precision="int8")
    text = manifest.to_json()
    again = Manifest.from_json(text)
    assert again == manifest
    assert again.to_dict() == json.loads(text)
    assert list(json.loads(text))[:4] == ["format_version", "method", "variant", "embedding_dim"]
    assert again.graphs["infrared"] == "infrared.onnx"
    assert again.input.mean == pytest.approx((0.485, 0.456, 0.406))


def test_precision_defaults_to_fp32_when_absent(manifest_factory: Callable[..., Manifest]) -> None:
    data = manifest_factory().to_dict()
    del data["precision"]
    assert Manifest.from_dict(data).precision == "fp32"


def test_load_from_dir(tmp_path: Path, manifest_factory: Callable[..., Manifest]) -> None:
    manifest = manifest_factory()
    (tmp_path / MANIFEST_FILENAME).write_text(manifest.to_json())
    assert Manifest.load(tmp_path) == manifest
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        Manifest.load(tmp_path / "nope")
    (tmp_path / MANIFEST_FILENAME).write_text('{"method": "salcr"}')
    with pytest.raises(ValueError, match=r"manifest\.json.*missing field"):
        Manifest.load(tmp_path)


def _set(**changes: Any) -> Mutator:
    def mutate(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, **changes}

    return mutate


def _drop(key: str) -> Mutator:
    return lambda data: {k: v for k, v in data.items() if k != key}


def _set_input(**changes: Any) -> Mutator:
    return lambda data: {**data, "input": {**data["input"], **changes}}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop("embedding_dim"), r"missing field.*embedding_dim"),
        (_set(colour="red"), r"unknown field.*colour"),
        (_set(embedding_dim=0), "embedding_dim"),
        (_set(embedding_dim=True), "embedding_dim"),
        (_set(flip_average="yes"), "flip_average"),
        (_set(format_version=2), "format_version"),
        (_set(graphs={"thermal": "t.onnx"}), "unknown modality"),
        (_set(graphs={"visible": "../evil.onnx"}), "bare file name"),
        (_set(graphs={}), "graphs"),
        (_set(model_version="not-hex"), "model_version"),
        (_set(created_at="yesterday"), "created_at"),
        (_set(precision="fp8"), "precision"),
        (_set(source_checkpoint=3), "source_checkpoint"),
        (_set(input=[1, 2]), "'input' must be an object"),
        (_set_input(std=[0.2, 0.0, 0.2]), r"input\.std"),
        (_set_input(mean=[0.5, 0.5]), r"input\.mean"),
        (_set_input(interpolation="lanczos9"), "interpolation"),
        (_set_input(layout="NHWC"), "NCHW"),
        (_set_input(height=-1), r"input\.height"),
        (_set_input(extra=1), r"unknown field.*extra"),
    ],
)
def test_validation_errors(mutate: Mutator, message: str, manifest_factory: Callable[..., Manifest]) -> None:
    with pytest.raises(ValueError, match=message):
        Manifest.from_dict(mutate(manifest_factory().to_dict()))


def test_invalid_json_text() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        Manifest.from_json("{not json")
    with pytest.raises(ValueError, match="JSON object"):
        Manifest.from_json("[1, 2]")


def test_graph_path_and_immutability(tmp_path: Path, manifest_factory: Callable[..., Manifest]) -> None:
    manifest = manifest_factory(graphs={"infrared": "ir.onnx"})
    assert manifest.graph_path(tmp_path, "infrared") == tmp_path / "ir.onnx"
    assert manifest.modalities == ("infrared",)
    with pytest.raises(ValueError, match="no graph"):
        manifest.graph_path(tmp_path, "visible")
    with pytest.raises(AttributeError):
        manifest.method = "sdcl"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.graphs["visible"] = "x.onnx"  # type: ignore[index]
