"""Alembic migrations of the gallery schema (run with :func:`vireid.index.upgrade_database`)."""
