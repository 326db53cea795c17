"""The JSON manifest saved beside each FAISS index file (house-style §25)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from vireid.index._protocol import CorruptIndexError

#: Version of the manifest layout; bump it when fields change meaning.
MANIFEST_FORMAT_VERSION: Final = 1

_FIELDS: Final[dict[str, type | tuple[type, ...]]] = {
    "format_version": int,
    "dim": int,
    "factory": str,
    "metric": str,
    "model_version": str,
    "modality": str,
    "count": int,
    "ids_sha256": str,
    "index_sha256": str,
    "index_bytes": int,
    "saved_at": str,
}


@dataclass(frozen=True)
class IndexManifest:
    """What an index file holds, written after the index so that a pair can be checked on load.

    Attributes:
        format_version: :data:`MANIFEST_FORMAT_VERSION` at write time.
        dim: embedding width ``D``.
        factory: FAISS factory string.
        metric: ``"ip"`` or ``"l2"``.
        model_version: export manifest model version the vectors come from.
        modality: ``"visible"`` or ``"infrared"``.
        count: number of vectors.
        ids_sha256: :func:`~vireid.index.ids_digest` of the ids (compared with SQL).
        index_sha256: SHA-256 of the index file bytes (detects torn or corrupted files).
        index_bytes: size of the index file in bytes.
        saved_at: ISO 8601 UTC time of the save.
    """

    format_version: int
    dim: int
    factory: str
    metric: str
    model_version: str
    modality: str
    count: int
    ids_sha256: str
    index_sha256: str
    index_bytes: int
    saved_at: str

    def to_json(self) -> str:
        """Pretty JSON text, keys sorted."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "manifest") -> IndexManifest:
        """Parse and type-check manifest JSON.

        Raises:
            CorruptIndexError: on invalid JSON, a missing or mistyped field, or another format version.
        """
        try:
            data: Any = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptIndexError(f"{source}: invalid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CorruptIndexError(f"{source}: expected a JSON object, got {type(data).__name__}")
        for name, kind in _FIELDS.items():
            value = data.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise CorruptIndexError(f"{source}: field {name!r} missing or not {kind}: {value!r}")
        if data["format_version"] != MANIFEST_FORMAT_VERSION:
            raise CorruptIndexError(
                f"{source}: format_version {data['format_version']} is not {MANIFEST_FORMAT_VERSION}"
            )
        return cls(**{name: data[name] for name in _FIELDS})

    @classmethod
    def read(cls, path: Path) -> IndexManifest:
        """Read a manifest file.

        Raises:
            FileNotFoundError: if it does not exist.
            CorruptIndexError: if it is not a valid manifest.
        """
        return cls.from_json(path.read_bytes(), source=str(path))
