"""`vireid serve`: run the HTTP search service with uvicorn.

Also holds the data-directory options shared by ``serve``, ``ingest`` and ``search``: each overrides
the ``VIREID_*`` environment setting of the same name.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vireid.api import Settings

logger = logging.getLogger(__name__)

_SETTINGS_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--data-dir", "data_dir", Path, "data directory (VIREID_DATA_DIR, default ./vireid-data)"),
    ("--model-dir", "model_dir", Path, "exported model (VIREID_MODEL_DIR, default <data-dir>/model)"),
    (
        "--database-url",
        "database_url",
        str,
        "SQLAlchemy URL (VIREID_DATABASE_URL, default SQLite in data dir)",
    ),
    ("--index-factory", "index_factory", str, "FAISS factory string (VIREID_INDEX_FACTORY)"),
    ("--backend", "backend", str, "embedder backend: auto, onnxruntime, tensorrt (VIREID_BACKEND)"),
    ("--device", "device", str, "embedder device: auto, cpu, cuda (VIREID_DEVICE)"),
    ("--batch-size", "batch_size", int, "images per embedding / commit batch (VIREID_BATCH_SIZE)"),
    (
        "--embed-batching",
        "embed_batching",
        str,
        "share embed calls of concurrent requests: auto (on a GPU), true, false (VIREID_EMBED_BATCHING)",
    ),
    (
        "--embed-max-batch-size",
        "embed_max_batch_size",
        int,
        "most images in one shared embed call (VIREID_EMBED_MAX_BATCH_SIZE, default 32)",
    ),
    (
        "--embed-max-queue-delay-ms",
        "embed_max_queue_delay_ms",
        float,
        "most ms a request waits for others to share its call (VIREID_EMBED_MAX_QUEUE_DELAY_MS, default 2)",
    ),
    ("--cuda-device-id", "cuda_device_id", int, "CUDA device ordinal (VIREID_CUDA_DEVICE_ID, default 0)"),
    (
        "--cudnn-conv-algo-search",
        "cudnn_conv_algo_search",
        str,
        "ONNX Runtime CUDA: EXHAUSTIVE, HEURISTIC, DEFAULT (VIREID_CUDNN_CONV_ALGO_SEARCH)",
    ),
    ("--trt-fp16", "trt_fp16", str, "TensorRT FP16 engines: true or false (VIREID_TRT_FP16)"),
    (
        "--trt-engine-cache-dir",
        "trt_engine_cache_dir",
        Path,
        "TensorRT engine cache (VIREID_TRT_ENGINE_CACHE_DIR, default <data-dir>/trt-cache)",
    ),
    (
        "--trt-workspace-gib",
        "trt_workspace_gib",
        float,
        "TensorRT builder workspace (VIREID_TRT_WORKSPACE_GIB)",
    ),
)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that override :class:`vireid.api.Settings` fields (all default to the environment)."""
    group = parser.add_argument_group("data and model (override VIREID_* environment variables)")
    for flag, dest, kind, text in _SETTINGS_OPTIONS:
        group.add_argument(
            flag, dest=f"settings_{dest}", metavar=dest.upper(), type=kind, default=None, help=text
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the options given on the command line winning.

    Raises:
        ValueError: an option value the settings refuse (pydantic ``ValidationError``).
    """
    from vireid.api import Settings

    overrides: dict[str, Any] = {
        dest: getattr(args, f"settings_{dest}")
        for _, dest, _, _ in _SETTINGS_OPTIONS
        if getattr(args, f"settings_{dest}", None) is not None
    }
    return Settings(**overrides)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``vireid serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP search service",
        description="Run the HTTP service (POST /search, /gallery, /healthz, /readyz, /docs) with uvicorn. "
        "Settings come from VIREID_* environment variables; see docs/api.md.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level of the service: uvicorn and vireid (default info)",
    )
    add_settings_arguments(parser)
    parser.set_defaults(handler=_run)


def _is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from vireid.api import create_app

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    settings = settings_from_args(args)
    logger.info("serving data dir %s on http://%s:%d", settings.data_dir.resolve(), args.host, args.port)
    if settings.api_key is None and not _is_loopback(args.host):
        logger.warning(
            "listening on %s without VIREID_API_KEY: anyone who can reach port %d can add and delete "
            "gallery items; set VIREID_API_KEY or bind to 127.0.0.1",
            args.host,
            args.port,
        )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0
