"""The model registry: exported models registered in a data directory, and which one is active.

SQL holds the registry (:class:`~vireid.index._models.ModelVersion`); the model files are copied to
``<data_dir>/models/<version>`` by the caller. Methods take a session and never commit (house-style §26).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from vireid.index._models import GalleryItem, ModelVersion

__all__ = ["GalleryKey", "ModelRegistry", "ReindexSource"]

#: ``(sha256, modality)``: one gallery image in one modality, whatever model embedded it.
GalleryKey = tuple[str, str]


@dataclass(frozen=True)
class ReindexSource:
    """A gallery image another version holds but ``version`` does not yet, with the metadata to copy."""

    sha256: str
    modality: str
    camera: str
    captured_at: datetime | None
    track_id: str | None
    source: str | None


class ModelRegistry:
    """Registry of model versions and the per-version view of the gallery."""

    def register(self, *, session: Session, manifest: Mapping[str, Any]) -> ModelVersion:
        """Add (or return the existing) registry row of an export manifest.

        Args:
            manifest: the manifest as a dict (``model_version``, ``method``, ``variant``,
                ``embedding_dim``, optional ``precision`` and ``created_at``).

        Raises:
            KeyError: a required manifest field is missing.
        """
        version = str(manifest["model_version"])
        row = session.get(ModelVersion, version)
        if row is not None:
            return row
        created = manifest.get("created_at")
        row = ModelVersion(
            version=version,
            method=str(manifest["method"]),
            variant=str(manifest["variant"]),
            embedding_dim=int(manifest["embedding_dim"]),
            precision=str(manifest.get("precision", "fp32")),
            exported_at=datetime.fromisoformat(created) if isinstance(created, str) else None,
            active=False,
            manifest=json.dumps(dict(manifest), sort_keys=True),
        )
        session.add(row)
        session.flush()
        return row

    def get(self, *, session: Session, version: str) -> ModelVersion | None:
        """The registry row of ``version``, or None."""
        return session.get(ModelVersion, version)

    def versions(self, *, session: Session) -> list[ModelVersion]:
        """Every registered version, oldest registration first."""
        return list(
            session.scalars(select(ModelVersion).order_by(ModelVersion.registered_at, ModelVersion.version))
        )

    def active(self, *, session: Session) -> ModelVersion | None:
        """The active version, or None when none is active yet."""
        return session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).first()

    def set_active(self, *, session: Session, version: str) -> None:
        """Make ``version`` the only active one.

        Raises:
            KeyError: ``version`` is not registered.
        """
        if session.get(ModelVersion, version) is None:
            raise KeyError(version)
        session.execute(update(ModelVersion).where(ModelVersion.version != version).values(active=False))
        session.execute(update(ModelVersion).where(ModelVersion.version == version).values(active=True))

    def unregister(self, *, session: Session, version: str) -> int:
        """Delete ``version``'s registry row and all its gallery rows (embeddings cascade).

        Returns:
            The number of gallery rows deleted.
        """
        ids = list(session.scalars(select(GalleryItem.id).where(GalleryItem.model_version == version)))
        for start in range(0, len(ids), 500):
            session.execute(delete(GalleryItem).where(GalleryItem.id.in_(ids[start : start + 500])))
        session.execute(delete(ModelVersion).where(ModelVersion.version == version))
        return len(ids)

    def counts(self, *, session: Session) -> dict[str, dict[str, int]]:
        """``{model_version: {modality: rows}}`` over the whole gallery."""
        stmt = select(GalleryItem.model_version, GalleryItem.modality, func.count()).group_by(
            GalleryItem.model_version, GalleryItem.modality
        )
        result: dict[str, dict[str, int]] = {}
        for version, modality, count in session.execute(stmt):
            result.setdefault(str(version), {})[str(modality)] = int(count)
        return result

    def gallery_size(self, *, session: Session) -> dict[str, int]:
        """Distinct gallery images per modality, over every version (what a complete version holds)."""
        inner = select(GalleryItem.sha256, GalleryItem.modality).distinct().subquery()
        stmt = select(inner.c.modality, func.count()).group_by(inner.c.modality)
        return {str(modality): int(count) for modality, count in session.execute(stmt)}

    def missing(
        self, *, session: Session, version: str, limit: int, after: GalleryKey | None = None
    ) -> list[ReindexSource]:
        """Up to ``limit`` gallery images (any other version holds them) that ``version`` lacks, with the
        metadata of their most recent row, in ``(sha256, modality)`` order after ``after`` (keyset
        paging: pass the last key of the previous page)."""
        have = aliased(GalleryItem)
        conditions = (
            [] if after is None else [tuple_(GalleryItem.sha256, GalleryItem.modality) > tuple_(*after)]
        )
        newest = (
            select(GalleryItem.sha256, GalleryItem.modality, func.max(GalleryItem.id).label("id"))
            .where(*conditions)
            .where(
                ~select(have.id)
                .where(
                    and_(
                        have.sha256 == GalleryItem.sha256,
                        have.modality == GalleryItem.modality,
                        have.model_version == version,
                    )
                )
                .exists()
            )
            .group_by(GalleryItem.sha256, GalleryItem.modality)
            .order_by(GalleryItem.sha256, GalleryItem.modality)
            .limit(limit)
            .subquery()
        )
        rows = session.scalars(select(GalleryItem).join(newest, GalleryItem.id == newest.c.id))
        found = [
            ReindexSource(
                sha256=str(r.sha256),
                modality=str(r.modality),
                camera=r.camera,
                captured_at=r.captured_at,
                track_id=r.track_id,
                source=r.source,
            )
            for r in rows
        ]
        return sorted(found, key=lambda r: (r.sha256, r.modality))

    def rows_for_keys(self, *, session: Session, keys: Sequence[GalleryKey]) -> list[tuple[int, str]]:
        """``(id, model_version)`` of every row holding one of ``keys``, across versions."""
        found: list[tuple[int, str]] = []
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            stmt = select(GalleryItem.id, GalleryItem.model_version).where(
                tuple_(GalleryItem.sha256, GalleryItem.modality).in_(chunk)
            )
            found.extend((int(i), str(v)) for i, v in session.execute(stmt))
        return found
