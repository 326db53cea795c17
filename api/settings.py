"""Service settings from ``VIREID_*`` environment variables (house-style §10, architecture Contract 6)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["MODALITIES", "Modality", "Settings", "get_settings"]

Modality = Literal["visible", "infrared"]
MODALITIES: tuple[Modality, Modality] = ("visible", "infrared")

_MIB = 1024 * 1024


class Settings(BaseSettings):
    """Settings shared by the HTTP service and the ``ingest`` / ``search`` / ``serve`` commands.

    Every field can be set through the environment with the ``VIREID_`` prefix (``VIREID_DATA_DIR``,
    ``VIREID_API_KEY``, ...) or passed as a keyword argument, which wins over the environment.
    """

    model_config = SettingsConfigDict(env_prefix="VIREID_", extra="ignore", frozen=True)

    data_dir: Path = Field(default=Path("./vireid-data"), description="Gallery database, indexes, model.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/gallery.db."
    )
    model_dir: Path | None = Field(
        default=None, description="Exported model (manifest.json + ONNX); default <data_dir>/model."
    )
    api_key: SecretStr | None = Field(
        default=None, description="When set, required as X-API-Key on mutating routes."
    )
    max_upload_bytes: int = Field(default=10 * _MIB, gt=0, description="Largest request body, in bytes.")
    max_image_pixels: int = Field(
        default=40_000_000, gt=0, description="Largest decoded image (width × height); bigger is refused."
    )
    body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a request body may take to arrive, from its first byte read; slower is "
        "408 and the connection is closed (10 MiB at 1.5 Mbit/s takes ~56 s).",
    )
    max_request_pixels: int = Field(
        default=64_000_000,
        gt=0,
        description="Most pixels (sum of width × height over its images, read from the image headers) "
        "one POST /gallery or POST /search may carry; more is refused with 413 before any decoding.",
    )
    max_decode_pixels: int = Field(
        default=48_000_000,
        gt=0,
        description="Most decoded pixels the process holds at once, across all requests: images are "
        "decoded, embedded and released in chunks under it, and requests wait their turn. At least "
        "max_image_pixels. 48 Mpx is 144 MB as RGB.",
    )
    max_files_per_request: int = Field(default=64, gt=0, description="Most images in one POST /gallery.")
    store_crops: bool = Field(
        default=True,
        description="Keep every accepted crop's bytes under <data_dir>/crops (content-addressed), served "
        "by GET /gallery/{id}/image and read when the gallery is re-embedded.",
    )
    return_source: bool = Field(
        default=False,
        description="Return each item's stored `source` (upload file name or, for `vireid ingest`, the "
        "server-side file path) in search results and GET /gallery/{id}; null when false.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins (scheme://host[:port], comma-separated) allowed to call the API "
        "from another origin; empty: CORS off and cross-origin writes refused (403).",
    )
    index_factory: str = Field(
        default="IDMap2,Flat",
        description="FAISS index factory string of new gallery indexes (must start with IDMap or IDMap2); "
        "IDMap2,Flat is exact. Factories that need training (IVF, PQ) stay exact until enough vectors are "
        "stored, then are trained in the background on a reservoir sample (docs/architecture.md).",
    )
    index_nprobe: int | None = Field(
        default=None,
        gt=0,
        description="IVF lists probed per search (POST /search `nprobe` overrides it per request); "
        "unset: FAISS's default (1). No effect on flat or HNSW indexes.",
    )
    index_ef_search: int | None = Field(
        default=None,
        gt=0,
        description="HNSW search beam per search, also of an IVF index's HNSW coarse quantiser "
        "(POST /search `ef_search` overrides it per request); unset: FAISS's default (16).",
    )
    index_k_factor: float | None = Field(
        default=None,
        ge=1,
        description="Refine factor of a refined factory (…,RFlat): the approximate index returns "
        "k_factor × k candidates that are re-scored exactly; unset: FAISS's default (1).",
    )
    index_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where unfiltered gallery searches run: cuda = a GPU copy of each flat/IVF index "
        "(needs faiss-gpu; GPU cuda_device_id), auto = cuda when FAISS sees a GPU, else cpu. Index files "
        "are always CPU indexes.",
    )
    index_retrain_factor: float = Field(
        default=4.0,
        gt=1,
        description="A trained (IVF/PQ) index is trained again, in the background, once the gallery holds "
        "this many times the vectors it was trained on.",
    )
    index_train_max_mib: int = Field(
        default=2048,
        gt=0,
        description="Memory cap (MiB, float32) of the reservoir sample an IVF/PQ index is trained on; "
        "FAISS's 256 vectors per centroid are used when they fit, never fewer than 39.",
    )
    index_backend: Literal["faiss", "milvus"] = Field(
        default="faiss",
        description="Where the gallery vectors live: faiss (index files in <data_dir>/indexes, one "
        "process writes) or milvus (collections in Milvus, shared by every replica; docs/milvus.md).",
    )
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus to use with index_backend=milvus: http://host:19530 (standalone or cluster) "
        "or a local file ending in .db (Milvus Lite, one process); default <data_dir>/milvus.db.",
    )
    milvus_token: SecretStr | None = Field(
        default=None, description="Milvus credentials (user:password or an API key); unused by Milvus Lite."
    )
    milvus_collection_prefix: str = Field(
        default="vireid",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="Prefix of the Milvus collection names, so several galleries can share one Milvus.",
    )
    milvus_index_type: str = Field(
        default="FLAT",
        description="Milvus vector index type of new collections: FLAT (exact), HNSW, IVF_FLAT, ...",
    )
    milvus_index_params: dict[str, Any] = Field(
        default_factory=dict,
        description='Build parameters of milvus_index_type, JSON (e.g. {"M": 16, "efConstruction": 200}).',
    )
    milvus_search_params: dict[str, Any] = Field(
        default_factory=dict,
        description='Milvus search parameters, JSON (e.g. {"ef": 64} for HNSW, {"nprobe": 16} for IVF).',
    )
    backend: Literal["auto", "onnxruntime", "tensorrt"] = Field(default="auto", description="Embedder.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Embedder device.")
    batch_size: int = Field(default=32, gt=0, description="Images embedded and committed per ingest batch.")
    embed_batching: bool | Literal["auto"] = Field(
        default="auto",
        description="Merge concurrent embed calls of one modality (searches, uploads) into shared batches; "
        "false: each request is embedded alone, in its own thread; auto: on when the model runs on a GPU "
        "(on the CPU, measured slower: docs/benchmarks.md).",
    )
    embed_max_batch_size: int = Field(
        default=32,
        gt=0,
        description="Most images in one shared embed call (a larger single request is embedded alone).",
    )
    embed_max_queue_delay_ms: float = Field(
        default=2.0,
        ge=0,
        description="Most milliseconds the oldest waiting request waits for others to share its batch; "
        "0 turns batching off.",
    )
    cuda_device_id: int = Field(
        default=0,
        ge=0,
        description="CUDA device ordinal of the embedder (ONNX Runtime's CUDA provider and TensorRT); "
        "no effect on CPU.",
    )
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        default="EXHAUSTIVE",
        description="cuDNN convolution algorithm search of ONNX Runtime's CUDA provider "
        "(case-insensitive): EXHAUSTIVE (ORT's default; slow first call per shape), HEURISTIC, DEFAULT; "
        "no effect on CPU or TensorRT.",
    )
    trt_fp16: bool = Field(
        default=False,
        description="Build TensorRT engines with FP16 kernels (backend=tensorrt only; ignored by "
        "ONNX Runtime).",
    )
    trt_engine_cache_dir: Path | None = Field(
        default=None,
        description="Where TensorRT engines are cached (built on first start, minutes); default "
        "<data_dir>/trt-cache (writable even when the model dir is mounted read-only).",
    )
    trt_workspace_gib: float = Field(
        default=4.0, gt=0, description="TensorRT builder workspace limit in GiB (backend=tensorrt only)."
    )
    # Tracklet queries and re-ranking of POST /search (issue #14, items 5 and 6).
    max_query_images: int = Field(
        default=16,
        gt=0,
        description="Most `image` parts (crops of one tracklet, fused into one query) in one POST /search; "
        "more is 422.",
    )
    rerank_candidates: int = Field(
        default=100,
        gt=0,
        description="R: top candidates re-scored by rerank=cmfp (at least k are re-scored).",
    )
    rerank_k: int = Field(
        default=8,
        gt=0,
        description="CMFP neighbours per block for rerank=cmfp (methods.md §A.6: the official tester "
        "default 8; 30 was used on the full SYSU test set).",
    )
    rerank_max_candidates: int = Field(
        default=2000,
        gt=0,
        description="Most candidates one rerank=cmfp search may re-score (cost grows with their square); "
        "a group_by=track search that needs more to find k tracks is 422.",
    )

    @field_validator(
        "api_key",
        "database_url",
        "model_dir",
        "trt_engine_cache_dir",
        "milvus_uri",
        "milvus_token",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty variable (``VIREID_API_KEY=``) means "not set", as compose files often pass one."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("cudnn_conv_algo_search", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        """``heuristic`` is ``HEURISTIC``, as ONNX Runtime spells it."""
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """``VIREID_CORS_ORIGINS=https://a.example,https://b.example`` → a list; blank → empty."""
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*" or not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"cors_origins: {origin!r} is not an origin like https://host[:port] ('*' is refused)"
                )
        return value

    @model_validator(mode="after")
    def _tensorrt_needs_a_gpu(self) -> Settings:
        if self.backend == "tensorrt" and self.device == "cpu":
            raise ValueError(
                "backend=tensorrt runs on a GPU only: set device to auto or cuda (VIREID_DEVICE), "
                "or use backend onnxruntime on CPU"
            )
        return self

    @model_validator(mode="after")
    def _decode_budget_fits_an_image(self) -> Settings:
        if self.max_decode_pixels < self.max_image_pixels:
            raise ValueError(
                f"max_decode_pixels ({self.max_decode_pixels}) must be at least max_image_pixels "
                f"({self.max_image_pixels}): the largest accepted image must fit in the decode budget"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        from vireid.index import default_database_url

        return str(default_database_url(self.data_dir))

    @field_validator("milvus_uri")
    @classmethod
    def _check_milvus_uri(cls, value: str | None) -> str | None:
        """A server URI, or a Milvus Lite file path ending in .db (pymilvus starts Lite only for those)."""
        if value is None:
            return None
        from vireid.index._milvus_index import check_milvus_uri

        return check_milvus_uri(value)

    @property
    def resolved_milvus_uri(self) -> str:
        """The Milvus URI, defaulting to a Milvus Lite file ``<data_dir>/milvus.db``."""
        if self.milvus_uri:
            return self.milvus_uri
        return str(self.data_dir.expanduser().resolve() / "milvus.db")

    @property
    def resolved_trt_engine_cache_dir(self) -> Path:
        """The TensorRT engine cache, defaulting to ``<data_dir>/trt-cache``."""
        if self.trt_engine_cache_dir is not None:
            return self.trt_engine_cache_dir
        return self.data_dir / "trt-cache"

    @property
    def resolved_model_dir(self) -> Path:
        """The model directory, defaulting to ``<data_dir>/model``."""
        return self.model_dir if self.model_dir is not None else self.data_dir / "model"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (FastAPI dependency; override it in tests or pass settings to
    ``create_app``)."""
    return Settings()
