"""``GET /healthz`` (process up) and ``GET /readyz`` (model and indexes loaded)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from vireid.api.schemas import Health, ModelInfo, Readiness
from vireid.api.services import ServiceContext
from vireid.api.settings import MODALITIES

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(request: Request) -> Readiness | JSONResponse:
    """Readiness: 200 when the model and both gallery indexes are loaded, 503 otherwise."""
    context: ServiceContext | None = getattr(request.app.state, "context", None)
    if context is None:
        reason = getattr(request.app.state, "load_error", None) or "still loading"
        body = Readiness(status="not ready", detail=reason)
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Readiness(
        status="ready",
        model=ModelInfo(method=context.method, version=context.model_version),
        gallery_size={m: len(context.index(m)) for m in MODALITIES},
    )
