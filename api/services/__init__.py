"""Services behind the HTTP routes and the ``ingest`` / ``search`` commands.

They own the unit of work (sessions, commits, index saves) and raise :mod:`vireid.api.errors`
exceptions, never HTTP ones, so the routes and the command line share them.
"""

from vireid.api.services._context import ServiceContext, model_version_of, open_context
from vireid.api.services._embedding_import import (
    DEFAULT_IMPORT_BATCH,
    EmbeddingImport,
    read_embedding_import,
    registered_dim,
)
from vireid.api.services._gallery import GalleryService, GalleryStatsResult, IngestOutcome, IngestReport
from vireid.api.services._images import check_request_pixels
from vireid.api.services._layouts import (
    IMAGE_SUFFIXES,
    SYSU_CAMERA_MODALITY,
    SYSU_SPLITS,
    parse_sysu_cameras,
    read_csv,
    read_folder,
    read_sysu_mm01,
)
from vireid.api.services._models import ModelService, ModelSummary, ReindexReport
from vireid.api.services._records import IngestFailure, IngestRecord, parse_modality
from vireid.api.services._rerank import cmfp_rerank
from vireid.api.services._search import (
    MAX_K,
    GroupBy,
    Rerank,
    SearchMatch,
    SearchResult,
    SearchService,
    fuse_tracklet,
    other_modality,
)

__all__ = [
    "DEFAULT_IMPORT_BATCH",
    "IMAGE_SUFFIXES",
    "MAX_K",
    "SYSU_CAMERA_MODALITY",
    "SYSU_SPLITS",
    "EmbeddingImport",
    "GalleryService",
    "GalleryStatsResult",
    "GroupBy",
    "IngestFailure",
    "IngestOutcome",
    "IngestRecord",
    "IngestReport",
    "ModelService",
    "ModelSummary",
    "ReindexReport",
    "Rerank",
    "SearchMatch",
    "SearchResult",
    "SearchService",
    "ServiceContext",
    "check_request_pixels",
    "cmfp_rerank",
    "fuse_tracklet",
    "model_version_of",
    "open_context",
    "other_modality",
    "parse_modality",
    "parse_sysu_cameras",
    "read_csv",
    "read_embedding_import",
    "read_folder",
    "read_sysu_mm01",
    "registered_dim",
]
