"""Initial gallery schema: gallery_items and embeddings.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-20 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the id type of this revision (64-bit on PostgreSQL, INTEGER PRIMARY KEY on SQLite).
_ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gallery_items",
        sa.Column("id", _ID_TYPE, autoincrement=True, nullable=False),
        sa.Column("camera", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("track_id", sa.String(length=128), nullable=True),
        sa.Column("source", sa.String(length=1024), nullable=True),
        sa.Column("sha256", sa.CHAR(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("modality IN ('visible', 'infrared')", name="ck_gallery_items_modality"),
        sa.PrimaryKeyConstraint("id", name="pk_gallery_items"),
        sa.UniqueConstraint(
            "sha256", "model_version", "modality", name="uq_gallery_items_sha256_model_version_modality"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_gallery_items_camera", "gallery_items", ["camera"])
    op.create_index("ix_gallery_items_captured_at", "gallery_items", ["captured_at"])
    op.create_index("ix_gallery_items_model_version_modality", "gallery_items", ["model_version", "modality"])
    op.create_table(
        "embeddings",
        sa.Column("item_id", _ID_TYPE, nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("dim > 0", name="ck_embeddings_dim_positive"),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["gallery_items.id"],
            name="fk_embeddings_item_id_gallery_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("item_id", name="pk_embeddings"),
    )


def downgrade() -> None:
    op.drop_table("embeddings")
    op.drop_index("ix_gallery_items_model_version_modality", table_name="gallery_items")
    op.drop_index("ix_gallery_items_captured_at", table_name="gallery_items")
    op.drop_index("ix_gallery_items_camera", table_name="gallery_items")
    op.drop_table("gallery_items")
