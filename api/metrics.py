"""Optional Prometheus metrics at ``GET /metrics`` (needs ``prometheus-client``, in the ``serve`` extra).

Each app gets its own registry, so several apps in one process (tests) do not collide. Besides the HTTP
request counters, ``vireid_embed_batch_size`` (images per embedder call) and ``vireid_embed_queue_seconds``
(time a request waited for its shared batch to start) come from the embed batcher
(:mod:`vireid.api.services._batching`), through the observer kept on ``app.state.embed_metrics``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

__all__ = ["BATCH_SIZE_BUCKETS", "QUEUE_SECONDS_BUCKETS", "EmbedHistograms", "install_metrics"]

logger = logging.getLogger(__name__)

#: Bucket bounds of ``vireid_embed_batch_size`` (images per call).
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
#: Bucket bounds of ``vireid_embed_queue_seconds``.
QUEUE_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class EmbedHistograms:
    """The embed batcher's observer (:class:`vireid.api.services._batching.BatchMetrics`) as histograms.

    Args:
        registry: the app's ``prometheus_client.CollectorRegistry``.
    """

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Histogram

        self._batch = Histogram(
            "vireid_embed_batch_size",
            "Images per embedder call (shared by concurrent requests when batching is on).",
            ["modality"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self._queue = Histogram(
            "vireid_embed_queue_seconds",
            "Seconds an embed request waited before its shared batch started.",
            ["modality"],
            buckets=QUEUE_SECONDS_BUCKETS,
            registry=registry,
        )

    def observe_batch(self, images: int, *, modality: str) -> None:
        """One embedder call of ``images`` images."""
        self._batch.labels(modality).observe(images)

    def observe_queue(self, seconds: float, *, modality: str) -> None:
        """One request's wait in the batcher queue."""
        self._queue.labels(modality).observe(seconds)


def install_metrics(app: FastAPI) -> bool:
    """Count requests and time them per route template and status; serve them at ``/metrics``.

    Also keeps the embed batcher's observer on ``app.state.embed_metrics`` (None without
    ``prometheus_client``); the lifespan hands it to ``open_context``.

    Returns:
        False (and nothing installed) when ``prometheus_client`` is not importable.
    """
    app.state.embed_metrics = None
    try:
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            Counter,
            Histogram,
            generate_latest,
        )
    except ImportError:
        logger.info("prometheus-client not installed: no /metrics")
        return False
    registry = CollectorRegistry()
    requests = Counter(
        "vireid_http_requests", "HTTP requests.", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "vireid_http_request_seconds",
        "HTTP request latency in seconds.",
        ["method", "route"],
        registry=registry,
    )

    app.state.embed_metrics = EmbedHistograms(registry)

    async def observe(request: Request, call_next: RequestResponseEndpoint) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        latency.labels(request.method, template).observe(time.perf_counter() - start)
        requests.labels(request.method, template, str(response.status_code)).inc()
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=observe)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return True
