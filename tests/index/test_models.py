"""ORM models: UTC datetimes, vector encoding, database-level constraints (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from vireid.index import Embedding, GalleryItem, decode_vector, encode_vector

PARIS = timezone(timedelta(hours=2))


def _item(**overrides: object) -> GalleryItem:
    fields: dict[str, object] = {
        "camera": "cam1",
        "modality": "visible",
        "sha256": "0" * 64,
        "model_version": "v1",
    }
    fields.update(overrides)
    return GalleryItem(**fields)


def test_vector_encoding_round_trip() -> None:
    vector = np.array([1.5, -2.0, 3.25], np.float32)
    data = encode_vector(vector)
    assert data == vector.astype("<f4").tobytes() and len(data) == 12
    np.testing.assert_array_equal(decode_vector(data, 3), vector)
    with pytest.raises(ValueError, match="12 bytes, expected 16"):
        decode_vector(data, 4)


def test_datetimes_come_back_in_utc(session: Session) -> None:
    captured = datetime(2025, 3, 1, 12, 30, tzinfo=PARIS)
    item = _item(captured_at=captured)
    session.add(item)
    session.commit()
    session.expire_all()
    loaded = session.get(GalleryItem, item.id)
    assert loaded is not None and loaded.captured_at is not None
    assert loaded.captured_at == captured
    assert loaded.captured_at.utcoffset() == timedelta(0)
    assert loaded.created_at.tzinfo is not None
    assert abs(loaded.created_at - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_naive_datetime_is_refused(session: Session) -> None:
    session.add(_item(captured_at=datetime(2025, 3, 1, 12, 30)))
    with pytest.raises(StatementError, match="timezone-aware"):
        session.flush()


def test_modality_check_constraint(session: Session) -> None:
    session.add(_item(modality="thermal"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_unique_sha256_model_version_modality(session: Session) -> None:
    session.add_all([_item(), _item(modality="infrared"), _item(model_version="v2")])
    session.commit()
    session.add(_item(camera="cam9"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_database_cascades_embedding_deletes(session: Session) -> None:
    item = _item(embedding=Embedding(dim=2, vector=encode_vector(np.ones(2, np.float32))))
    session.add(item)
    session.commit()
    # A bulk DELETE bypasses the ORM: only the foreign key's ON DELETE CASCADE removes the embedding.
    session.execute(delete(GalleryItem).where(GalleryItem.id == item.id))
    session.commit()
    assert session.scalar(select(func.count()).select_from(Embedding)) == 0


def test_ids_are_not_reused_after_delete(session: Session) -> None:
    first = _item()
    session.add(first)
    session.commit()
    first_id = first.id
    session.delete(first)
    session.commit()
    second = _item(sha256="1" * 64)
    session.add(second)
    session.commit()
    assert second.id > first_id
