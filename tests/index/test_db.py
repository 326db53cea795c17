"""Engines, URLs and programmatic Alembic migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from vireid.index import (
    Base,
    alembic_config,
    default_database_url,
    downgrade_database,
    make_engine,
    make_sessionmaker,
    normalize_url,
    upgrade_database,
)


def test_default_database_url_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_database_url("data") == f"sqlite:///{(tmp_path / 'data' / 'gallery.db').as_posix()}"


def test_normalize_url() -> None:
    assert normalize_url("postgresql://u@h:5432/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(ValueError, match="invalid database URL"):
        normalize_url("not a url")


def test_sqlite_engine_creates_folder_and_sets_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/a/b/gallery.db")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (tmp_path / "a" / "b" / "gallery.db").is_file()
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_shared_between_sessions() -> None:
    engine = make_engine("sqlite://")
    upgrade_database(engine)
    factory = make_sessionmaker(engine)
    try:
        with factory() as writer:
            writer.execute(
                text(
                    "INSERT INTO gallery_items (camera, modality, sha256, model_version, created_at) "
                    "VALUES ('cam1', 'visible', :digest, 'v1', CURRENT_TIMESTAMP)"
                ),
                {"digest": "a" * 64},
            )
            writer.commit()
        with factory() as reader:
            assert reader.execute(text("SELECT count(*) FROM gallery_items")).scalar_one() == 1
    finally:
        engine.dispose()


def test_alembic_config_needs_no_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = alembic_config("sqlite:///x.db")
    location = Path(config.get_main_option("script_location") or "")
    assert location.is_absolute() and (location / "env.py").is_file()
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1


def test_upgrade_from_another_cwd_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/data/gallery.db"
    upgrade_database(url)
    upgrade_database(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert {"gallery_items", "embeddings"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(database_url: str) -> None:
    upgrade_database(database_url)
    downgrade_database(database_url, revision="base")
    engine = make_engine(database_url)
    try:
        assert not {"gallery_items", "embeddings"} & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    upgrade_database(database_url)


def test_unusable_sqlite_path_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        upgrade_database(f"sqlite:///{blocker}/gallery.db")
