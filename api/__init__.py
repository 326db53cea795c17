"""HTTP service (FastAPI): search, gallery ingest, health."""
