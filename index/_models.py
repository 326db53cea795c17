"""SQLAlchemy 2.0 models of the gallery metadata (house-style §27, architecture.md contract 5).

Every schema change here needs a matching Alembic migration in ``migrations/versions``; a test checks
that autogenerate finds no difference between these models and the migrated schema.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

#: Constraint names are fixed so that migrations and models agree on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an "INTEGER PRIMARY KEY"; PostgreSQL gets a 64-bit BIGSERIAL-like key.
_ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetime stored in UTC on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC and
    come back with ``tzinfo=UTC``. Naive datetimes are refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise ValueError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"datetime must be timezone-aware, got naive {value.isoformat()}")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the gallery schema."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class GalleryItem(Base):
    """One gallery crop, embedded by one model version.

    The same image ingested for two model versions gives two rows; ``(sha256, model_version,
    modality)`` is unique. The row id is also the vector id in the FAISS index (house-style §25).
    """

    __tablename__ = "gallery_items"
    __table_args__ = (
        UniqueConstraint("sha256", "model_version", "modality"),
        CheckConstraint("modality IN ('visible', 'infrared')", name="modality"),
        Index("ix_gallery_items_model_version_modality", "model_version", "modality"),
        Index("ix_gallery_items_camera", "camera"),
        Index("ix_gallery_items_captured_at", "captured_at"),
        # Never reuse a deleted id on SQLite: a stale index file must not match a new row.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(_ID_TYPE, primary_key=True, autoincrement=True)
    camera: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16))
    captured_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    track_id: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(CHAR(64))
    model_version: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=func.now())

    embedding: Mapped[Embedding | None] = relationship(
        back_populates="item", cascade="all, delete-orphan", passive_deletes=True, uselist=False
    )

    def __repr__(self) -> str:
        return (
            f"GalleryItem(id={self.id}, camera={self.camera!r}, modality={self.modality!r}, "
            f"model_version={self.model_version!r}, sha256={self.sha256[:12] if self.sha256 else None!r})"
        )


class Embedding(Base):
    """The stored embedding of a gallery item, so any index can be rebuilt from SQL.

    ``vector`` holds ``dim`` float32 values, little-endian (``numpy.dtype("<f4")``).
    """

    __tablename__ = "embeddings"
    __table_args__ = (CheckConstraint("dim > 0", name="dim_positive"),)

    item_id: Mapped[int] = mapped_column(
        _ID_TYPE, ForeignKey("gallery_items.id", ondelete="CASCADE"), primary_key=True
    )
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    item: Mapped[GalleryItem] = relationship(back_populates="embedding")

    def as_array(self) -> npt.NDArray[np.float32]:
        """The embedding as a ``(dim,)`` float32 array.

        Raises:
            ValueError: if the stored byte length does not match ``dim``.
        """
        return decode_vector(self.vector, self.dim)


class ModelVersion(Base):
    """An exported model registered in the data directory (its files in ``<data_dir>/models/<version>``).

    At most one row is ``active``: the version the service embeds and searches with; the registry keeps
    that choice across restarts. ``manifest`` holds the export manifest as JSON.
    """

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    method: Mapped[str] = mapped_column(String(32))
    variant: Mapped[str] = mapped_column(String(32))
    embedding_dim: Mapped[int] = mapped_column(Integer)
    precision: Mapped[str] = mapped_column(String(16))
    exported_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, server_default=func.now())
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    manifest: Mapped[str] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"ModelVersion(version={self.version!r}, method={self.method!r}, active={self.active})"


def encode_vector(vector: npt.NDArray[np.float32]) -> bytes:
    """``(D,)`` float32 → little-endian float32 bytes for :attr:`Embedding.vector`."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_vector(data: Any, dim: int) -> npt.NDArray[np.float32]:
    """Little-endian float32 bytes → ``(dim,)`` float32 array.

    Raises:
        ValueError: if the byte length is not ``4 * dim``.
    """
    raw = bytes(data)
    if len(raw) != 4 * dim:
        raise ValueError(f"stored vector has {len(raw)} bytes, expected {4 * dim} for dim {dim}")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
