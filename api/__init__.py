"""HTTP service (FastAPI): search, gallery ingest, health.

Public entry points: :func:`create_app` (application factory), :class:`Settings` / :func:`get_settings`
(``VIREID_*`` environment), and the services in :mod:`vireid.api.services` shared with the command line.
Nothing heavy is imported or loaded here; the model and indexes are loaded by the app's lifespan.
"""

from vireid.api.app import create_app
from vireid.api.settings import MODALITIES, Modality, Settings, get_settings

__all__ = ["MODALITIES", "Modality", "Settings", "create_app", "get_settings"]
