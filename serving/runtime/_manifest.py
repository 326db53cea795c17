"""The export manifest (``manifest.json``) read by every embedder backend (architecture.md Contract 3)."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "INTERPOLATIONS",
    "MANIFEST_FILENAME",
    "MODALITIES",
    "PRECISIONS",
    "InputSpec",
    "Manifest",
]

FORMAT_VERSION = 1
MANIFEST_FILENAME = "manifest.json"
MODALITIES: tuple[str, ...] = ("visible", "infrared")
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")
PRECISIONS: tuple[str, ...] = ("fp32", "int8")

_INPUT_REQUIRED = ("height", "width", "channels", "layout", "dtype", "mean", "std", "interpolation")
_TOP_REQUIRED = (
    "format_version",
    "method",
    "variant",
    "embedding_dim",
    "input",
    "flip_average",
    "normalize_output",
    "graphs",
    "input_name",
    "output_name",
    "model_version",
    "source_checkpoint",
    "pretrained",
    "randomly_initialised",
    "created_at",
    "vireid_version",
    "opset",
)
_TOP_OPTIONAL = {"precision": "fp32"}
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


def _check_keys(
    data: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...], where: str
) -> None:
    missing = [k for k in required if k not in data]
    unknown = sorted(set(data) - set(required) - set(optional))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing field(s) {missing}")
        if unknown:
            parts.append(f"unknown field(s) {unknown}")
        raise ValueError(f"invalid {where}: " + "; ".join(parts))


def _int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"manifest field {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"manifest field {name!r} must be true or false, got {value!r}")
    return value


def _str(value: Any, name: str, *, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        kind = "a non-empty string or null" if allow_none else "a non-empty string"
        raise ValueError(f"manifest field {name!r} must be {kind}, got {value!r}")
    return value


def _triple(value: Any, name: str, *, positive: bool) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or (positive and min(value) <= 0):
        rule = "3 positive numbers" if positive else "3 numbers"
        raise ValueError(f"manifest field {name!r} must be {rule}, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


@dataclass(frozen=True)
class InputSpec:
    """Network input and preprocessing (Contract 2) of an exported model.

    Attributes:
        height: Input height in pixels.
        width: Input width in pixels.
        mean: Per-channel RGB mean subtracted after scaling to [0, 1].
        std: Per-channel RGB standard deviation, all > 0.
        interpolation: Pillow resize filter, one of ``INTERPOLATIONS``.
        channels: Always 3 (RGB).
        layout: Always ``"NCHW"``.
        dtype: Always ``"float32"``.
    """

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    channels: int = 3
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _int(self.height, "input.height", minimum=1)
        _int(self.width, "input.width", minimum=1)
        object.__setattr__(self, "mean", _triple(self.mean, "input.mean", positive=False))
        object.__setattr__(self, "std", _triple(self.std, "input.std", positive=True))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"manifest field 'input.interpolation' must be one of {INTERPOLATIONS}, "
                f"got {self.interpolation!r}"
            )
        if self.channels != 3 or self.layout != "NCHW" or self.dtype != "float32":
            raise ValueError(
                "only 3-channel NCHW float32 inputs are supported, got "
                f"channels={self.channels!r} layout={self.layout!r} dtype={self.dtype!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Build from the ``input`` object of a manifest; raises ``ValueError`` on any bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"manifest field 'input' must be an object, got {type(data).__name__}")
        _check_keys(data, _INPUT_REQUIRED, (), "manifest 'input'")
        return cls(**{k: data[k] for k in _INPUT_REQUIRED})

    def to_dict(self) -> dict[str, Any]:
        """The ``input`` object of the manifest, in Contract 3 order."""
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "layout": self.layout,
            "dtype": self.dtype,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


def _check_graphs(graphs: Any) -> types.MappingProxyType[str, str]:
    if not isinstance(graphs, Mapping) or not graphs:
        raise ValueError(f"manifest field 'graphs' must be a non-empty object, got {graphs!r}")
    unknown = sorted(set(graphs) - set(MODALITIES))
    if unknown:
        raise ValueError(f"manifest 'graphs' has unknown modality(ies) {unknown}; valid: {list(MODALITIES)}")
    for modality, name in graphs.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"manifest graphs[{modality!r}] must be a file name, got {name!r}")
        path = PurePosixPath(name)
        if path.is_absolute() or len(path.parts) != 1 or name in {".", ".."} or "\\" in name:
            raise ValueError(
                f"manifest graphs[{modality!r}] must be a bare file name in the model dir, got {name!r}"
            )
    ordered = {m: graphs[m] for m in MODALITIES if m in graphs}
    return types.MappingProxyType(ordered)


@dataclass(frozen=True)
class Manifest:
    """Validated content of ``manifest.json`` (architecture.md Contract 3).

    Construction validates every field and raises ``ValueError`` with a message naming the field.
    ``graphs`` maps modality (``"visible"``/``"infrared"``) to an ONNX file name relative to the
    model directory. ``precision`` is ``"fp32"`` or ``"int8"`` (absent in older manifests: fp32).
    """

    method: str
    variant: str
    embedding_dim: int
    input: InputSpec
    flip_average: bool
    normalize_output: bool
    graphs: Mapping[str, str]
    input_name: str
    output_name: str
    model_version: str
    source_checkpoint: str | None
    pretrained: str | None
    randomly_initialised: bool
    created_at: str
    vireid_version: str
    opset: int
    precision: str = "fp32"
    format_version: int = field(default=FORMAT_VERSION)

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION or isinstance(self.format_version, bool):
            raise ValueError(
                f"unsupported manifest format_version {self.format_version!r}; expected {FORMAT_VERSION}"
            )
        for name in ("method", "variant", "input_name", "output_name", "vireid_version"):
            _str(getattr(self, name), name)
        for name in ("source_checkpoint", "pretrained"):
            _str(getattr(self, name), name, allow_none=True)
        _int(self.embedding_dim, "embedding_dim", minimum=1)
        _int(self.opset, "opset", minimum=7)
        for name in ("flip_average", "normalize_output", "randomly_initialised"):
            _bool(getattr(self, name), name)
        if not isinstance(self.input, InputSpec):
            raise ValueError(f"manifest field 'input' must be an InputSpec, got {type(self.input).__name__}")
        if not isinstance(self.model_version, str) or not _HEX.match(self.model_version):
            raise ValueError(
                "manifest field 'model_version' must be 8-64 lowercase hex digits, "
                f"got {self.model_version!r}"
            )
        try:
            datetime.fromisoformat(str(self.created_at))
        except ValueError as exc:
            raise ValueError(
                f"manifest field 'created_at' must be ISO 8601, got {self.created_at!r}"
            ) from exc
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"manifest field 'precision' must be one of {PRECISIONS}, got {self.precision!r}"
            )
        object.__setattr__(self, "graphs", _check_graphs(self.graphs))

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
        """Build from a decoded JSON object; raises ``ValueError`` for missing, unknown or bad fields."""
        if not isinstance(data, Mapping):
            raise ValueError(f"manifest must be a JSON object, got {type(data).__name__}")
        _check_keys(data, _TOP_REQUIRED, tuple(_TOP_OPTIONAL), "manifest")
        kwargs = {k: data[k] for k in _TOP_REQUIRED if k != "input"}
        kwargs.update({k: data.get(k, default) for k, default in _TOP_OPTIONAL.items()})
        return cls(input=InputSpec.from_dict(data["input"]), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in Contract 3 field order."""
        return {
            "format_version": self.format_version,
            "method": self.method,
            "variant": self.variant,
            "embedding_dim": self.embedding_dim,
            "input": self.input.to_dict(),
            "flip_average": self.flip_average,
            "normalize_output": self.normalize_output,
            "graphs": dict(self.graphs),
            "input_name": self.input_name,
            "output_name": self.output_name,
            "model_version": self.model_version,
            "source_checkpoint": self.source_checkpoint,
            "pretrained": self.pretrained,
            "randomly_initialised": self.randomly_initialised,
            "precision": self.precision,
            "created_at": self.created_at,
            "vireid_version": self.vireid_version,
            "opset": self.opset,
        }

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
        """Read ``<model_dir>/manifest.json``; raises ``FileNotFoundError`` naming the path when absent."""
        path = Path(model_dir) / MANIFEST_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"no {MANIFEST_FILENAME} in model dir {Path(model_dir)} (run `vireid export`)"
            )
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
