"""The JSON manifest saved beside each FAISS index file (house-style §25).

A pydantic v2 model: validation and the published JSON Schema (``docs/schemas/index-manifest.schema.json``,
written by ``scripts/export_schemas.py``) come from the same field declarations.
"""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
)

from vireid.index._protocol import CorruptIndexError
from vireid.index._validation import _MODEL_VERSION_RE, _SHA256_RE, METRICS, MODALITIES

#: Version of the manifest layout; bump it when fields change meaning.
MANIFEST_FORMAT_VERSION: Final = 1


def _iso8601(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date and time") from None
    return value


def _choice(choices: tuple[str, ...]) -> AfterValidator:
    """Limit a ``str`` field to ``choices`` (typed plainly for callers; an ``enum`` in the schema)."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)}")
        return value

    return AfterValidator(check)


_Count = Annotated[StrictInt, Field(ge=0)]
_Sha256 = Annotated[StrictStr, StringConstraints(pattern=_SHA256_RE.pattern)]


def _schema_extra(schema: dict[str, Any]) -> None:
    schema["description"] = (
        "<modality>.json written beside <modality>.faiss under <data_dir>/indexes/<model_version>/ "
        "(architecture.md Contract 5). Keys this version does not know are ignored."
    )


class IndexManifest(BaseModel):
    """What an index file holds, written after the index so that a pair can be checked on load.

    Immutable: assigning a field raises :class:`AttributeError`. Keys this version does not know are
    ignored when read (as before the pydantic model), so a manifest with an added field still loads.

    Attributes:
        format_version: :data:`MANIFEST_FORMAT_VERSION` at write time.
        dim: embedding width ``D``.
        factory: FAISS factory string configured for this index.
        built_factory: the factory the file holds when it differs (``IDMap2,Flat`` while a factory that
            needs training is still exact); None: the same as ``factory``.
        trained_count: vectors the index held when it was trained (0: untrained or no training).
        metric: ``"ip"`` or ``"l2"``.
        model_version: export manifest model version the vectors come from.
        modality: ``"visible"`` or ``"infrared"``.
        count: number of vectors.
        ids_sha256: :func:`~vireid.index.ids_digest` of the ids (compared with SQL).
        index_sha256: SHA-256 of the index file bytes (detects torn or corrupted files).
        index_bytes: size of the index file in bytes.
        saved_at: ISO 8601 UTC time of the save.
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", title="vireid index manifest", json_schema_extra=_schema_extra
    )

    format_version: Literal[1] = Field(description="Layout version; vireid reads version 1 only.")
    dim: Annotated[StrictInt, Field(ge=1, description="Embedding width D.")]
    factory: Annotated[StrictStr, StringConstraints(min_length=1), Field(description="FAISS factory string.")]
    built_factory: Annotated[StrictStr, StringConstraints(min_length=1)] | None = Field(
        default=None, description="Factory the file holds when not factory (IDMap2,Flat before training)."
    )
    trained_count: _Count = Field(default=0, description="Vectors the index held when it was trained.")
    metric: Annotated[StrictStr, _choice(METRICS)] = Field(
        description="ip (inner product) or l2.", json_schema_extra={"enum": list(METRICS)}
    )
    model_version: Annotated[
        StrictStr,
        StringConstraints(pattern=_MODEL_VERSION_RE.pattern),
        Field(description="model_version of the export manifest the vectors come from."),
    ]
    modality: Annotated[StrictStr, _choice(MODALITIES)] = Field(
        description="Modality of the vectors.", json_schema_extra={"enum": list(MODALITIES)}
    )
    count: _Count = Field(description="Number of vectors in the index.")
    ids_sha256: _Sha256 = Field(description="SHA-256 of the sorted ids as little-endian int64 (ids_digest).")
    index_sha256: _Sha256 = Field(description="SHA-256 of the index file bytes.")
    index_bytes: _Count = Field(description="Size of the index file in bytes.")
    saved_at: Annotated[StrictStr, AfterValidator(_iso8601)] = Field(
        description="ISO 8601 UTC time of the save."
    )

    @field_validator("format_version", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        if isinstance(value, bool) or value != MANIFEST_FORMAT_VERSION:
            raise ValueError(
                f"unsupported version; this vireid reads format_version {MANIFEST_FORMAT_VERSION}"
            )
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: IndexManifest is immutable")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}: IndexManifest is immutable")

    def to_json(self) -> str:
        """Pretty JSON text, keys sorted; ``built_factory`` and ``trained_count`` only when not their
        defaults, so the manifest of an exact index reads as before they existed."""
        return (
            json.dumps(self.model_dump(mode="json", exclude_defaults=True), indent=2, sort_keys=True) + "\n"
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "manifest") -> IndexManifest:
        """Parse and validate manifest JSON.

        Raises:
            CorruptIndexError: on invalid JSON, a missing or bad field, or another format version; the
                message starts with ``source`` and names every bad field.
        """
        try:
            data: Any = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptIndexError(f"{source}: invalid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CorruptIndexError(f"{source}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CorruptIndexError(f"{source}: {_describe_errors(exc)}") from None

    @classmethod
    def read(cls, path: Path) -> IndexManifest:
        """Read a manifest file.

        Raises:
            FileNotFoundError: if it does not exist.
            CorruptIndexError: if it is not a valid manifest.
        """
        return cls.from_json(path.read_bytes(), source=str(path))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of an index manifest file, as published in ``docs/schemas``."""
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **cls.model_json_schema()}


def _describe_errors(exc: ValidationError) -> str:
    """``missing field(s) [...]; field 'dim': should be greater than or equal to 1, got 0``."""
    missing: list[str] = []
    other: list[str] = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            missing.append(loc)
        else:
            message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Input ")
            other.append(f"field {loc!r}: {message[:1].lower()}{message[1:]}, got {error['input']!r}")
    parts = [f"missing field(s) {missing}"] if missing else []
    return "invalid index manifest: " + "; ".join(parts + other)
