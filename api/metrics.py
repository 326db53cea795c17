"""Optional Prometheus metrics at ``GET /metrics`` (needs ``prometheus-client``, in the ``serve`` extra).

Each app gets its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

__all__ = ["install_metrics"]

logger = logging.getLogger(__name__)


def install_metrics(app: FastAPI) -> bool:
    """Count requests and time them per route template and status; serve them at ``/metrics``.

    Returns:
        False (and nothing installed) when ``prometheus_client`` is not importable.
    """
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
