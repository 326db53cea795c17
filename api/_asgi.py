"""Small helpers the ASGI middlewares share: header lookup and a complete JSON error response."""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.types import Scope, Send

__all__ = ["body_announced", "header", "send_json_error"]


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (lower-case ``name``), latin-1 decoded; None when absent."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def body_announced(scope: Scope) -> bool:
    """True when the request says a body follows (chunked, or a non-zero ``Content-Length``)."""
    return header(scope, b"transfer-encoding") is not None or (header(scope, b"content-length") or "0") != "0"


async def send_json_error(
    send: Send,
    status: int,
    detail: str,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    close: bool = False,
) -> None:
    """Send ``{"detail": detail}`` with ``status``; ``close`` adds ``Connection: close`` (an unread body
    must not be taken for the next request)."""
    body = json.dumps({"detail": detail}).encode()
    all_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    all_headers.extend(headers)
    if close:
        all_headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
