"""Engines, sessions and programmatic Alembic migrations for the gallery database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

logger = logging.getLogger(__name__)

#: File name of the default SQLite database inside the data directory.
DATABASE_FILENAME: Final = "gallery.db"
_MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
_POSTGRES_DRIVERS: Final = ("postgresql", "postgres")


def default_database_url(data_dir: str | Path) -> str:
    """``sqlite:///<absolute data_dir>/gallery.db``, the database used when no URL is configured.

    Args:
        data_dir: the service data directory (need not exist yet).
    """
    return f"sqlite:///{(Path(data_dir).expanduser().resolve() / DATABASE_FILENAME).as_posix()}"


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; plain ``postgresql://`` (or ``postgres://``) gets the psycopg 3 driver.

    Raises:
        ValueError: if ``url`` cannot be parsed.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError, a plain Exception subclass
        raise ValueError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.drivername in _POSTGRES_DRIVERS:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    """Per-connection SQLite setup: foreign keys on (for ON DELETE CASCADE), WAL journal."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for the gallery database.

    SQLite: the parent folder of the file is created, ``check_same_thread=False`` (the API serves from a
    thread pool), and every connection gets ``PRAGMA foreign_keys=ON`` and ``journal_mode=WAL``. An
    in-memory SQLite URL (``sqlite://``) uses one shared connection (``StaticPool``) so that every
    session sees the same database. ``postgresql://`` URLs use the psycopg 3 driver. Other URLs are
    passed through.

    Args:
        url: SQLAlchemy database URL.
        **kwargs: extra :func:`sqlalchemy.create_engine` arguments.

    Raises:
        ValueError: if ``url`` cannot be parsed.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, **kwargs)
    connect_args = {"check_same_thread": False, **kwargs.pop("connect_args", {})}
    if _is_sqlite_memory(parsed):
        kwargs.setdefault("poolclass", StaticPool)
    elif parsed.database and not parsed.database.startswith("file:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Session factory for ``engine``; objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` built in code (no ``alembic.ini``, no cwd dependence).

    ``script_location`` is the ``migrations`` folder of this package, wherever it is installed.

    Args:
        url: database URL stored as ``sqlalchemy.url`` (used by ``env.py`` when no connection is given).
    """
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade_database(url: str | URL | Engine, *, revision: str = "head") -> None:
    """Run ``alembic upgrade <revision>`` on a database (creates the schema on an empty one).

    Args:
        url: database URL, or an existing engine (not disposed afterwards).
        revision: target revision.

    Raises:
        ValueError: if the URL cannot be parsed.
        sqlalchemy.exc.OperationalError: if the database cannot be reached.
    """
    _run_alembic(url, command.upgrade, revision=revision)


def downgrade_database(url: str | URL | Engine, *, revision: str) -> None:
    """Run ``alembic downgrade <revision>`` (``"base"`` drops the gallery tables and their data).

    Args:
        url: database URL, or an existing engine (not disposed afterwards).
        revision: target revision, e.g. ``"-1"`` or ``"base"``.

    Raises:
        ValueError: if the URL cannot be parsed.
        sqlalchemy.exc.OperationalError: if the database cannot be reached.
    """
    _run_alembic(url, command.downgrade, revision=revision)


def _run_alembic(url: str | URL | Engine, action: Callable[[Config, str], None], *, revision: str) -> None:
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        config = alembic_config(engine.url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            action(config, revision)
        logger.info("database %s migrated to %s", engine.url.render_as_string(), revision)
    finally:
        if engine is not url:
            engine.dispose()
