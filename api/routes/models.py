"""``/models``: the model versions of this data directory; activate (hot swap) and delete them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from starlette.concurrency import run_in_threadpool

from vireid.api.deps import ApiKeyDep, ContextDep
from vireid.api.routes._responses import error_responses
from vireid.api.schemas import ModelEntry, ModelList
from vireid.api.services import ModelService, model_version_of

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])

VersionPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Model version (as in GET /models).",
    ),
]


@router.get("", response_model=ModelList, responses=error_responses(503))
def list_models(context: ContextDep) -> ModelList:
    """Every registered version with its share of the gallery; ``active`` is the one in use."""
    size, summaries = ModelService(context).summaries()
    return ModelList(
        active=model_version_of(context.embedder),
        gallery=size,
        models=[ModelEntry.model_validate(s) for s in summaries],
    )


@router.post(
    "/{version}/activate",
    response_model=ModelEntry,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
async def activate_model(context: ContextDep, version: VersionPath) -> ModelEntry:
    """Switch the running service to a registered, completely indexed version, atomically: requests in
    flight finish on the old model, new ones use the new one. The choice persists across restarts.
    409 when the version does not hold the whole gallery yet (run ``vireid reindex`` first)."""
    summary = await run_in_threadpool(ModelService(context).activate, version)
    return ModelEntry.model_validate(summary)


@router.delete(
    "/{version}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[ApiKeyDep],
    responses=error_responses(401, 403, 404, 409, 422, 503),
)
def delete_model(context: ContextDep, version: VersionPath) -> Response:
    """Delete a version that is not active: its gallery rows, indexes and model files (409 for the
    active one)."""
    ModelService(context).delete(version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
