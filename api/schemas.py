"""Request and response schemas of the HTTP API (house-style §32), kept apart from the ORM rows."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vireid.api._bounds import MAX_CAMERA_CHARS, MAX_SOURCE_CHARS, MAX_TRACK_ID_CHARS
from vireid.api.settings import Modality

__all__ = [
    "CameraModalityCount",
    "ErrorResponse",
    "GalleryCreateResponse",
    "GalleryItemCreate",
    "GalleryItemPublic",
    "GalleryStats",
    "Health",
    "Match",
    "ModelEntry",
    "ModelInfo",
    "ModelList",
    "Readiness",
    "SearchResponse",
]


class ErrorResponse(BaseModel):
    """Body of every error response."""

    detail: str = Field(description="What went wrong.")


class ModelInfo(BaseModel):
    """The model that produced the embeddings."""

    method: str = Field(description="Training method, e.g. 'salcr' or 'sdcl'.")
    version: str = Field(description="Model version (content hash from the export manifest).")


class Match(BaseModel):
    """One gallery item returned by a search."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    score: float = Field(
        description="Cosine similarity to the query, in [-1, 1]; higher is closer. With rerank=cmfp, the "
        "cosine similarity of the CMFP-propagated vectors (the re-ranked score)."
    )
    camera: str
    modality: Modality
    captured_at: datetime | None = None
    track_id: str | None = None
    source: str | None = None
    track_matches: int | None = Field(
        default=None,
        description="group_by=track only: how many of the candidates examined belong to this match's "
        "group (its track_id; 1 for an item without a track_id, a group of its own); null otherwise.",
    )


class SearchResponse(BaseModel):
    """Result of ``POST /search``; ``matches`` are in descending score (ties: ascending id)."""

    model: ModelInfo
    query_modality: Modality
    target_modality: Modality
    matches: list[Match]
    took_ms: float = Field(description="Server-side time for decode, embed and search, in milliseconds.")
    query_images: int = Field(
        default=1, description="Number of query crops fused into the query vector (1 for one crop)."
    )
    group_by: Literal["none", "track"] = Field(
        default="none", description="track: one match per gallery track_id, and k counts tracks."
    )
    rerank: Literal["none", "cmfp"] = Field(
        default="none", description="cmfp: scores are re-ranked by test-time CMFP of the top candidates."
    )
    candidates: int = Field(
        default=0,
        description="Gallery items examined: the index's top hits that were grouped and/or re-ranked "
        "(equal to the number of matches for a plain search).",
    )


class GalleryItemCreate(BaseModel):
    """Metadata sent with ``POST /gallery`` (multipart form fields), applied to every image."""

    camera: str = Field(min_length=1, max_length=MAX_CAMERA_CHARS)
    modality: Modality
    captured_at: datetime | None = None
    track_id: str | None = Field(default=None, max_length=MAX_TRACK_ID_CHARS)
    source: str | None = Field(default=None, max_length=MAX_SOURCE_CHARS)


class GalleryItemPublic(BaseModel):
    """A stored gallery item."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    camera: str
    modality: Modality
    captured_at: datetime | None = None
    track_id: str | None = None
    source: str | None = None
    sha256: str
    model_version: str
    created_at: datetime | None = None


class GalleryCreateResponse(BaseModel):
    """Ids of the uploaded images, in upload order; a duplicate image gets the id already stored."""

    ids: list[int]
    added: int = Field(description="How many images were new.")
    duplicates: int = Field(description="How many images were already in the gallery.")


class CameraModalityCount(BaseModel):
    """Number of gallery items for one (camera, modality) pair."""

    camera: str
    modality: Modality
    count: int


class GalleryStats(BaseModel):
    """Counts of gallery items embedded by the loaded model."""

    model_version: str
    total: int
    by_modality: dict[str, int]
    by_camera: list[CameraModalityCount]


class Health(BaseModel):
    """Liveness answer."""

    status: str


class Readiness(BaseModel):
    """Readiness answer: model and indexes loaded."""

    status: str
    model: ModelInfo | None = None
    gallery_size: dict[str, int] = Field(default_factory=dict, description="Vectors per modality index.")
    detail: str | None = None


class ModelEntry(BaseModel):
    """A registered model version (``GET /models``)."""

    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    version: str = Field(description="Model version (content hash from the export manifest).")
    method: str
    variant: str
    embedding_dim: int
    precision: str
    exported_at: datetime | None = Field(default=None, description="When it was exported (manifest).")
    registered_at: datetime | None = Field(default=None, description="When this data dir registered it.")
    active: bool = Field(description="The version the service embeds and searches with.")
    gallery: dict[str, int] = Field(description="Gallery images it holds per modality.")
    complete: bool = Field(description="It holds every gallery image (it can be activated).")


class ModelList(BaseModel):
    """Every registered version and the gallery size a complete version holds."""

    model_config = ConfigDict(protected_namespaces=())

    active: str = Field(description="The active version.")
    gallery: dict[str, int] = Field(description="Distinct gallery images per modality, over all versions.")
    models: list[ModelEntry]
