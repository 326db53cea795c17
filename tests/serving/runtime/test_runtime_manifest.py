"""Manifest round trip and validation (serving/runtime/_manifest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vireid.serving.runtime import MANIFEST_FILENAME, InputSpec, Manifest

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


# A manifest exactly as `vireid export` wrote it before the pydantic models (no "precision": fp32).
_WRITTEN_BEFORE = """{
  "format_version": 1,
  "method": "sdcl",
  "variant": "mobile",
  "embedding_dim": 2560,
  "input": {
    "height": 144,
    "width": 72,
    "channels": 3,
    "layout": "NCHW",
    "dtype": "float32",
    "mean": [
      0.485,
      0.456,
      0.406
    ],
    "std": [
      0.229,
      0.224,
      0.225
    ],
    "interpolation": "bilinear"
  },
  "flip_average": true,
  "normalize_output": true,
  "graphs": {
    "visible": "visible.onnx",
    "infrared": "infrared.onnx"
  },
  "input_name": "images",
  "output_name": "embeddings",
  "model_version": "0123456789abcdef",
  "source_checkpoint": "runs/sdcl/checkpoint.pt",
  "pretrained": null,
  "randomly_initialised": false,
  "created_at": "2025-03-01T12:00:00.123456+00:00",
  "vireid_version": "0.1.0",
  "opset": 18
}
"""


def test_older_manifest_loads_and_writes_back_unchanged_but_for_precision() -> None:
    manifest = Manifest.from_json(_WRITTEN_BEFORE)
    assert manifest.precision == "fp32" and manifest.input.mean == (0.485, 0.456, 0.406)
    expected: dict[str, Any] = {}
    for key, value in json.loads(_WRITTEN_BEFORE).items():
        expected |= {"precision": "fp32"} if key == "created_at" else {}  # Contract 3 order
        expected[key] = value
    assert manifest.to_json() == json.dumps(expected, indent=2) + "\n"
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_every_bad_field_is_named_in_one_message(
    tmp_path: Path, manifest_factory: Callable[..., Manifest]
) -> None:
    data = manifest_factory().to_dict()
    del data["opset"], data["format_version"]
    data |= {"colour": "red", "embedding_dim": -3, "method": ""}
    data["input"] = {**data["input"], "std": [0.2, 0.0, 0.2], "shape": "x"}
    (tmp_path / MANIFEST_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        Manifest.load(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / MANIFEST_FILENAME}: invalid manifest: ")
    assert "missing field(s) ['format_version', 'opset']" in message
    assert "unknown field(s) ['colour', 'input.shape']" in message
    assert "field 'embedding_dim': should be greater than or equal to 1, got -3" in message
    assert "field 'method': " in message and "got ''" in message
    assert "field 'input.std': must be 3 positive numbers, got [0.2, 0.0, 0.2]" in message
    assert "\n" not in message and "pydantic" not in message


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop("format_version"), r"missing field\(s\) \['format_version'\]"),
        (
            lambda d: {**d, "input": {k: v for k, v in d["input"].items() if k != "dtype"}},
            r"\['input\.dtype'\]",
        ),
        (_set(format_version=True), "format_version.*reads format_version 1, got True"),
        (_set(opset="18"), "field 'opset': should be a valid integer, got '18'"),
        (_set(graphs={"visible": 3}), r"field 'graphs\.visible': should be a valid string, got 3"),
        (_set_input(mean=["0.5", 0.5, 0.5]), r"field 'input\.mean': must be 3 numbers"),
        (_set(created_at=20250101), "field 'created_at': should be a valid string"),
    ],
)
def test_strict_types_and_file_only_required_keys(
    mutate: Mutator, message: str, manifest_factory: Callable[..., Manifest]
) -> None:
    """No coercion (bool as int, "18" as int), and a file must hold the keys the constructor defaults."""
    with pytest.raises(ValueError, match=message):
        Manifest.from_dict(mutate(manifest_factory().to_dict()))


def test_constructor_keeps_its_defaults_and_validates(manifest_factory: Callable[..., Manifest]) -> None:
    manifest = manifest_factory()
    assert (manifest.format_version, manifest.precision) == (1, "fp32")
    assert (manifest.input.channels, manifest.input.layout, manifest.input.dtype) == (3, "NCHW", "float32")
    with pytest.raises(ValueError, match="embedding_dim"):
        manifest_factory(embedding_dim=0)
    assert hash(manifest.input) == hash(InputSpec.from_dict(manifest.input.to_dict()))


def test_published_json_schema_is_current() -> None:
    """docs/schemas/export-manifest.schema.json is generated from the model (scripts/export_schemas.py)."""
    path = Path(__file__).resolve().parents[3] / "docs" / "schemas" / "export-manifest.schema.json"
    schema = Manifest.json_schema()
    assert json.loads(path.read_text()) == schema, "stale schema: run scripts/export_schemas.py"
    assert schema["additionalProperties"] is False
    assert "format_version" in schema["required"] and "precision" not in schema["required"]
    assert set(schema["$defs"]["InputSpec"]["required"]) == set(InputSpec.model_fields)
