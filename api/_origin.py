"""Cross-origin hygiene: writes from a web page of another origin are refused unless that origin is
configured (``VIREID_CORS_ORIGINS``), in which case Starlette's CORS middleware answers its preflights.

A browser sends a multipart ``POST`` to any origin without a preflight (a "simple" request): without
this check a page on another site could add images to a gallery that has no API key, or search it,
even though CORS keeps the page from reading the answer. Browsers always send ``Origin`` on such
requests; clients that are not browsers (curl, SDKs, the CLI) send none and are not affected
(issue #15, item 10).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from vireid.api._asgi import body_announced, header, send_json_error

__all__ = ["SAFE_METHODS", "CrossOriginWriteMiddleware"]

logger = logging.getLogger(__name__)

#: Methods that change nothing; every other method is a write for this check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        origin = header(scope, b"origin") if scope["type"] == "http" else None
        if (
            origin is None
            or scope["method"] in SAFE_METHODS
            or origin.rstrip("/") in self.allowed
            or _same_origin(origin, header(scope, b"host"))
        ):
            await self.app(scope, receive, send)
            return
        logger.info("refused %s %s from origin %r", scope["method"], scope["path"], origin)
        await send_json_error(
            send,
            403,
            f"cross-origin request from {origin[:200]} refused; allow it with VIREID_CORS_ORIGINS",
            close=body_announced(scope),
        )
