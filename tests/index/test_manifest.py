"""Index manifest (index/_manifest.py): byte-identical round trip, old files, errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vireid.index import METRICS, MODALITIES, CorruptIndexError, IndexManifest

# A manifest exactly as IndexStore wrote it before the pydantic model.
_WRITTEN_BEFORE = """{
  "count": 3,
  "dim": 12,
  "factory": "IDMap2,Flat",
  "format_version": 1,
  "ids_sha256": "IDS",
  "index_bytes": 190,
  "index_sha256": "BYTES",
  "metric": "ip",
  "modality": "visible",
  "model_version": "0123456789abcdef",
  "saved_at": "2025-03-01T12:00:00.123456+00:00"
}
""".replace("IDS", "a" * 64).replace("BYTES", "b" * 64)


def _data(**changes: Any) -> dict[str, Any]:
    return {**json.loads(_WRITTEN_BEFORE), **changes}


def test_older_manifest_round_trips_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "visible.json"
    path.write_text(_WRITTEN_BEFORE)
    manifest = IndexManifest.read(path)
    assert (manifest.dim, manifest.count, manifest.modality) == (12, 3, "visible")
    assert manifest.to_json() == _WRITTEN_BEFORE
    with pytest.raises(AttributeError):
        manifest.count = 4  # type: ignore[misc]


def test_trained_index_fields_round_trip() -> None:
    manifest = IndexManifest.from_json(
        json.dumps(_data(factory="IDMap2,IVF64,Flat", built_factory="IDMap2,Flat", trained_count=0))
    )
    assert manifest.built_factory == "IDMap2,Flat" and '"trained_count"' not in manifest.to_json()
    trained = IndexManifest.from_json(json.dumps(_data(factory="IDMap2,IVF64,Flat", trained_count=5000)))
    assert trained.built_factory is None and IndexManifest.from_json(trained.to_json()) == trained
    with pytest.raises(CorruptIndexError, match="trained_count"):
        IndexManifest.from_json(json.dumps(_data(trained_count=-1)))


def test_unknown_keys_are_ignored_as_before() -> None:
    """Forward compatibility within format 1: a later field does not make the index unreadable."""
    manifest = IndexManifest.from_json(json.dumps(_data(written_by="vireid 0.2")))
    assert manifest.to_json() == _WRITTEN_BEFORE


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": None}, "field 'dim': should be a valid integer, got None"),
        ({"dim": True}, "field 'dim': should be a valid integer, got True"),
        ({"dim": 0}, "field 'dim': should be greater than or equal to 1, got 0"),
        ({"count": "3"}, "field 'count': should be a valid integer, got '3'"),
        (
            {"format_version": 2},
            "field 'format_version': unsupported version; this vireid reads format_version 1",
        ),
        ({"metric": "cos"}, "field 'metric': must be one of ['ip', 'l2'], got 'cos'"),
        ({"modality": "thermal"}, "field 'modality': must be one of ['visible', 'infrared'], got 'thermal'"),
        ({"model_version": "../x"}, "field 'model_version': string should match pattern"),
        ({"index_sha256": "XYZ"}, "field 'index_sha256': string should match pattern"),
        ({"saved_at": "yesterday"}, "field 'saved_at': must be an ISO 8601 date and time, got 'yesterday'"),
    ],
)
def test_bad_fields_name_the_file_field_and_value(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CorruptIndexError) as info:
        IndexManifest.from_json(json.dumps(_data(**changes)), source="idx/visible.json")
    assert str(info.value).startswith("idx/visible.json: invalid index manifest: ")
    assert message in str(info.value)


def test_missing_fields_and_several_errors_in_one_message() -> None:
    data = _data(count=-1)
    del data["dim"], data["factory"]
    with pytest.raises(CorruptIndexError) as info:
        IndexManifest.from_json(json.dumps(data), source="m.json")
    assert str(info.value) == (
        "m.json: invalid index manifest: missing field(s) ['dim', 'factory']; "
        "field 'count': should be greater than or equal to 0, got -1"
    )


@pytest.mark.parametrize(
    ("text", "message"), [(b"{", "invalid JSON"), (b"\xff", "invalid JSON"), (b"[]", "JSON object")]
)
def test_not_a_json_object(text: bytes, message: str) -> None:
    with pytest.raises(CorruptIndexError, match=message):
        IndexManifest.from_json(text)


def test_published_json_schema_is_current() -> None:
    """docs/schemas/index-manifest.schema.json is generated from the model (scripts/export_schemas.py)."""
    path = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "index-manifest.schema.json"
    schema = IndexManifest.json_schema()
    assert json.loads(path.read_text()) == schema, "stale schema: run scripts/export_schemas.py"
    optional = {"built_factory", "trained_count"}  # added later, with defaults, still format 1
    assert set(schema["required"]) == set(IndexManifest.model_fields) - optional
    assert schema["properties"]["metric"]["enum"] == list(METRICS)
    assert schema["properties"]["modality"]["enum"] == list(MODALITIES)
