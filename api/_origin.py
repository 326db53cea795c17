"""Cross-origin hygiene: writes from a web page of another origin are refused unless that origin is
configured (``VIREID_CORS_ORIGINS``), in which case Starlette's CORS middleware answers its preflights.

A browser sends a multipart ``POST`` to any origin without a preflight (a "simple" request): without
this check a page on another site could add images to a gallery that has no API key, or search it,
even though CORS keeps the page from reading the answer. Browsers always send ``Origin`` on such
requests; clients that are not browsers (curl, SDKs, the CLI) send none and are not affected
(issue #15, item 10).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SAFE_METHODS", "CrossOriginWriteMiddleware"]

logger = logging.getLogger(__name__)

#: Methods that change nothing; every other method is a write for this check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _same_origin(origin: str, host: str | None) -> bool:
    """True when ``origin``'s host[:port] is the ``Host`` the request was sent to."""
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and host is not None and netloc.lower() == host.lower()


class CrossOriginWriteMiddleware:
    """Answer 403 to a non-GET request whose ``Origin`` is neither the service's own nor allowed.

    Args:
        app: the wrapped ASGI app.
        allowed_origins: origins (``scheme://host[:port]``) allowed besides the service's own.
    """

    def __init__(self, app: ASGIApp, *, allowed_origins: Collection[str]) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if (
            origin is None
            or scope["method"] in SAFE_METHODS
            or origin.rstrip("/") in self.allowed
            or _same_origin(origin, _header(scope, b"host"))
        ):
            await self.app(scope, receive, send)
            return
        logger.info("refused %s %s from origin %r", scope["method"], scope["path"], origin)
        body = json.dumps(
            {"detail": f"cross-origin request from {origin[:200]} refused; allow it with VIREID_CORS_ORIGINS"}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if (
            _header(scope, b"transfer-encoding") is not None
            or (_header(scope, b"content-length") or "0") != "0"
        ):
            headers.append((b"connection", b"close"))  # the unread body must not be taken for a request
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
