"""Alembic revision scripts of the gallery schema."""
