"""The export manifest (``manifest.json``) read by every embedder backend (architecture.md Contract 3).

The two models here are pydantic v2 models: validation, the error messages (built by
:func:`_describe_errors`) and the published JSON Schema (``docs/schemas/export-manifest.schema.json``,
written by ``scripts/export_schemas.py``) all come from the same field declarations.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import FrozenInstanceError
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    field_validator,
)

__all__ = [
    "FORMAT_VERSION",
    "INTERPOLATIONS",
    "MANIFEST_FILENAME",
    "MODALITIES",
    "PRECISIONS",
    "InputSpec",
    "Manifest",
]

FORMAT_VERSION: Final = 1
MANIFEST_FILENAME = "manifest.json"
MODALITIES: tuple[str, ...] = ("visible", "infrared")
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")
PRECISIONS: tuple[str, ...] = ("fp32", "int8")

#: Fields a manifest *file* must contain although the Python constructor gives them a default
#: (``precision`` stays optional in files: older manifests lack it and mean fp32).
_FILE_REQUIRED_TOP: tuple[str, ...] = ("format_version",)
_FILE_REQUIRED_INPUT: tuple[str, ...] = ("channels", "layout", "dtype")


def _numbers3(value: Any) -> tuple[float, float, float]:
    """3 JSON numbers (not booleans, not strings) → a float triple."""
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError("must be 3 numbers")
    return (float(value[0]), float(value[1]), float(value[2]))


def _positive3(value: tuple[float, float, float]) -> tuple[float, float, float]:
    if min(value) <= 0:
        raise ValueError("must be 3 positive numbers")
    return value


def _bare_file_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or len(path.parts) != 1 or name in {".", ".."} or "\\" in name:
        raise ValueError("must be a bare file name in the model dir")
    return name


def _iso8601(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date and time") from None
    return value


def _choice(choices: tuple[Any, ...]) -> AfterValidator:
    """Limit a ``str``/``int`` field to ``choices``; typed plainly for callers (as before the models)."""

    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(
                f"must be {choices[0]!r}" if len(choices) == 1 else f"must be one of {list(choices)}"
            )
        return value

    return AfterValidator(check)


def _enum(choices: tuple[Any, ...]) -> Any:
    return Field(json_schema_extra={"const": choices[0]} if len(choices) == 1 else {"enum": list(choices)})


_Triple = tuple[float, float, float]
_Mean = Annotated[_Triple, BeforeValidator(_numbers3)]
_Std = Annotated[
    _Triple,
    BeforeValidator(_numbers3),
    AfterValidator(_positive3),
    WithJsonSchema(
        {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 3, "maxItems": 3}
    ),
]
_Text = Annotated[StrictStr, StringConstraints(min_length=1)]
_GraphFile = Annotated[
    StrictStr,
    StringConstraints(min_length=1),
    AfterValidator(_bare_file_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "pattern": r"^[^/\\]+$",
            "description": "A file name in the model directory (no path separators, not '.' or '..').",
        }
    ),
]
_ModelVersion = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9a-f]{8,64}$")]
_Timestamp = Annotated[StrictStr, AfterValidator(_iso8601)]
_Interpolation = Annotated[StrictStr, _choice(INTERPOLATIONS), _enum(INTERPOLATIONS)]
_Precision = Annotated[StrictStr, _choice(PRECISIONS), _enum(PRECISIONS)]
_Channels = Annotated[StrictInt, _choice((3,)), _enum((3,))]
_Layout = Annotated[StrictStr, _choice(("NCHW",)), _enum(("NCHW",))]
_Dtype = Annotated[StrictStr, _choice(("float32",)), _enum(("float32",))]


class _Frozen(BaseModel):
    """Immutable, strict about unknown keys; assignment raises :class:`AttributeError` as a frozen
    dataclass does (pydantic's own frozen check raises a ``ValidationError``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: {type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}: {type(self).__name__} is immutable")


def _schema_extra(description: str, *required: str) -> Any:
    """``json_schema_extra`` hook: a plain description (not the class docstring) and the keys a
    file must hold although the Python constructor defaults them."""

    def extra(schema: dict[str, Any]) -> None:
        schema["description"] = description
        wanted = set(schema.get("required", [])) | set(required)
        schema["required"] = [k for k in schema["properties"] if k in wanted]

    return extra


def _describe_errors(exc: ValidationError, *, where: str, missing: Sequence[str] = ()) -> str:
    """One line naming every bad field of a validation error.

    Missing and unknown keys are grouped (``missing field(s) ['opset']; unknown field(s) ['colour']``);
    any other error reads ``field 'input.std': must be 3 positive numbers, got [0.2, 0.0, 0.2]``.

    Args:
        exc: the pydantic error.
        where: what was validated (``"manifest"``), the start of the message.
        missing: keys a file must hold although the constructor defaults them, found absent.
    """
    absent, unknown, other = list(missing), [], []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            absent.append(loc)
        elif error["type"] == "extra_forbidden":
            unknown.append(loc)
        else:
            message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Input ")
            other.append(f"field {loc!r}: {message[:1].lower()}{message[1:]}, got {error['input']!r}")
    parts = [f"missing field(s) {absent}"] if absent else []
    if unknown:
        parts.append(f"unknown field(s) {sorted(unknown)}")
    return f"invalid {where}: " + "; ".join(parts + other)


def _file_missing(data: Mapping[str, Any]) -> list[str]:
    """Keys the file lacks that the constructor would default (see ``_FILE_REQUIRED_*``)."""
    missing = [k for k in _FILE_REQUIRED_TOP if k not in data]
    spec = data.get("input")
    if isinstance(spec, Mapping):
        missing += [f"input.{k}" for k in _FILE_REQUIRED_INPUT if k not in spec]
    return missing


class InputSpec(_Frozen):
    """Network input and preprocessing (Contract 2) of an exported model.

    Attributes:
        height: Input height in pixels.
        width: Input width in pixels.
        channels: Always 3 (RGB).
        layout: Always ``"NCHW"``.
        dtype: Always ``"float32"``.
        mean: Per-channel RGB mean subtracted after scaling to [0, 1].
        std: Per-channel RGB standard deviation, all > 0.
        interpolation: Pillow resize filter, one of ``INTERPOLATIONS``.
    """

    model_config = ConfigDict(
        title="InputSpec",
        json_schema_extra=_schema_extra(
            "Network input and preprocessing of the graphs (architecture.md Contract 2).",
            *_FILE_REQUIRED_INPUT,
        ),
    )

    height: Annotated[StrictInt, Field(ge=1, description="Input height in pixels.")]
    width: Annotated[StrictInt, Field(ge=1, description="Input width in pixels.")]
    channels: _Channels = Field(default=3, description="Always 3 (RGB).")
    layout: _Layout = Field(default="NCHW", description="Always NCHW.")
    dtype: _Dtype = Field(default="float32", description="Always float32.")
    mean: _Mean = Field(description="Per-channel RGB mean subtracted after scaling to [0, 1].")
    std: _Std = Field(description="Per-channel RGB standard deviation (divisor), all > 0.")
    interpolation: _Interpolation = Field(description="Pillow resize filter.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Build from the ``input`` object of a manifest; raises ``ValueError`` on any bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"manifest field 'input' must be an object, got {type(data).__name__}")
        missing = [k for k in _FILE_REQUIRED_INPUT if k not in data]
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(_describe_errors(exc, where="manifest 'input'", missing=missing)) from None
        if missing:
            raise ValueError(f"invalid manifest 'input': missing field(s) {missing}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The ``input`` object of the manifest, in Contract 3 order."""
        return self.model_dump(mode="json")


class Manifest(_Frozen):
    """Validated content of ``manifest.json`` (architecture.md Contract 3).

    Construction validates every field and raises ``ValueError`` (a pydantic ``ValidationError``)
    naming the field; :meth:`from_dict`, :meth:`from_json` and :meth:`load` raise a plain
    ``ValueError`` with one readable line. ``graphs`` maps modality (``"visible"``/``"infrared"``)
    to an ONNX file name relative to the model directory (a read-only mapping, in ``MODALITIES``
    order). ``precision`` is ``"fp32"`` or ``"int8"`` (absent in older manifests: fp32).
    """

    model_config = ConfigDict(
        title="vireid export manifest",
        json_schema_extra=_schema_extra(
            "manifest.json written by `vireid export` beside the ONNX graphs (architecture.md Contract 3). "
            "Unknown keys are refused.",
            *_FILE_REQUIRED_TOP,
        ),
    )

    format_version: Literal[1] = Field(
        default=FORMAT_VERSION,
        description="Layout version of this file; vireid reads version 1 only.",
    )
    method: _Text = Field(description="Training method, e.g. salcr or sdcl.")
    variant: _Text = Field(description="Model variant, e.g. full, tiny or mobile.")
    embedding_dim: Annotated[StrictInt, Field(ge=1)] = Field(description="Embedding width D.")
    input: InputSpec = Field(description="Network input and preprocessing (Contract 2).")
    flip_average: StrictBool = Field(description="Average the embeddings of the image and its mirror.")
    normalize_output: StrictBool = Field(description="L2-normalise the output rows.")
    graphs: Annotated[
        Mapping[str, _GraphFile],
        Field(
            min_length=1,
            description="ONNX graph file per modality, relative to the model directory.",
            json_schema_extra={"propertyNames": {"enum": list(MODALITIES)}},
        ),
    ]
    input_name: _Text = Field(description="Name of the graphs' input tensor.")
    output_name: _Text = Field(description="Name of the graphs' output tensor.")
    model_version: _ModelVersion = Field(
        description="Hex digest identifying the graphs (first 16 hex of their sha256 when exported)."
    )
    source_checkpoint: _Text | None = Field(description="Checkpoint the model was exported from, or null.")
    pretrained: _Text | None = Field(description="Pretrained weights the model started from, or null.")
    randomly_initialised: StrictBool = Field(description="True when no trained weights were loaded.")
    precision: _Precision = Field(
        default="fp32", description="Graph precision; absent in older manifests, meaning fp32."
    )
    created_at: _Timestamp = Field(description="ISO 8601 time of the export.")
    vireid_version: _Text = Field(description="vireid version that wrote the export.")
    opset: Annotated[StrictInt, Field(ge=7)] = Field(description="ONNX opset of the graphs.")

    @field_validator("format_version", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        if isinstance(value, bool) or value != FORMAT_VERSION:
            raise ValueError(f"unsupported version; this vireid reads format_version {FORMAT_VERSION}")
        return value

    @field_validator("graphs")
    @classmethod
    def _known_modalities(cls, graphs: Mapping[str, str]) -> Mapping[str, str]:
        unknown = sorted(set(graphs) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown modality(ies) {unknown}; valid: {list(MODALITIES)}")
        return types.MappingProxyType({m: graphs[m] for m in MODALITIES if m in graphs})

    @field_serializer("graphs")
    def _graphs_as_dict(self, graphs: Mapping[str, str]) -> dict[str, str]:
        return dict(graphs)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities with a graph, in ``MODALITIES`` order."""
        return tuple(self.graphs)

    def graph_path(self, model_dir: str | Path, modality: str) -> Path:
        """Path of the ONNX graph for ``modality``; raises ``ValueError`` for a modality without a graph."""
        if modality not in self.graphs:
            raise ValueError(f"modality {modality!r} has no graph; this model has {list(self.graphs)}")
        return Path(model_dir) / self.graphs[modality]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Build from a decoded JSON object; raises ``ValueError`` for missing, unknown or bad fields.

        Every problem is reported in one message (``invalid manifest: missing field(s) [...];
        field 'input.std' must be 3 positive numbers, got [...]``).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"manifest must be a JSON object, got {type(data).__name__}")
        if "input" in data and not isinstance(data["input"], Mapping):
            raise ValueError(f"manifest field 'input' must be an object, got {type(data['input']).__name__}")
        missing = _file_missing(data)
        try:
            manifest = cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(_describe_errors(exc, where="manifest", missing=missing)) from None
        if missing:
            raise ValueError(f"invalid manifest: missing field(s) {missing}")
        return manifest

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in Contract 3 field order."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse manifest JSON text; raises ``ValueError`` for invalid JSON or content."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"manifest is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def to_json(self) -> str:
        """Pretty JSON text (2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def load(cls, model_dir: str | Path) -> Manifest:
        """Read ``<model_dir>/manifest.json``; raises ``FileNotFoundError`` naming the path when absent
        and ``ValueError`` starting with the path when the file is not a valid manifest."""
        path = Path(model_dir) / MANIFEST_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"no {MANIFEST_FILENAME} in model dir {Path(model_dir)} (run `vireid export`)"
            )
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of a manifest file, as published in ``docs/schemas``."""
        schema = cls.model_json_schema()
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
