"""HTTP routers: ``/search``, ``/gallery``, ``/models``, ``/healthz`` + ``/readyz``."""

from vireid.api.routes.gallery import router as gallery_router
from vireid.api.routes.health import router as health_router
from vireid.api.routes.models import router as models_router
from vireid.api.routes.search import router as search_router

__all__ = ["gallery_router", "health_router", "models_router", "search_router"]
