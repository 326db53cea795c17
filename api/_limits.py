"""ASGI middleware that bounds request bodies: 413 over a byte limit, 408 when they arrive too slowly.

A declared ``Content-Length`` over the limit is refused before any byte of the body is read. Bodies
without a length (chunked) are counted while the app reads them; once over the limit the read fails,
whatever response the app produced is dropped and a 413 is sent instead. The whole body must arrive
within a read timeout counted from the first read; a slower client (a slow-body attack that would hold
a worker) gets 408 and its connection is closed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vireid.api._asgi import send_json_error

__all__ = ["BodySizeLimitMiddleware"]

logger = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


async def _send_413(send: Send, limit: int) -> None:
    await send_json_error(send, 413, f"request body larger than the {limit}-byte limit")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimitMiddleware:
    """Refuse HTTP request bodies larger than ``max_bytes`` (413) or slower than ``timeout_s`` (408).

    Args:
        app: the wrapped ASGI app.
        max_bytes: largest accepted request body, in bytes.
        timeout_s: seconds from the app's first read of the body to its last byte; None for no limit.

    Raises:
        ValueError: ``max_bytes`` < 1 or ``timeout_s`` <= 0.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float | None = None) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            logger.info("refused %s %s: Content-Length %d", scope["method"], scope["path"], declared)
            await _send_413(send, self.max_bytes)
            return
        state: dict[str, Any] = {
            "received": 0,
            "exceeded": False,
            "slow": False,
            "started": False,
            "done": False,
            "deadline": None,
        }

        async def timed_receive() -> Message:
            if self.timeout_s is None or state["done"]:
                return await receive()
            if state["deadline"] is None:
                state["deadline"] = time.monotonic() + self.timeout_s
            try:
                with anyio.fail_after(max(state["deadline"] - time.monotonic(), 0.0)):
                    return await receive()
            except TimeoutError:
                state["slow"] = True
                raise _BodyTooSlow from None

        async def limited_receive() -> Message:
            message = await timed_receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    state["done"] = True
                if state["received"] > self.max_bytes:
                    state["exceeded"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"] or state["slow"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except (_BodyTooLarge, _BodyTooSlow):
            pass
        except Exception:
            if not (state["exceeded"] or state["slow"]):
                raise
        if state["started"]:
            return
        if state["exceeded"]:
            logger.info("refused %s %s: body over %d bytes", scope["method"], scope["path"], self.max_bytes)
            await _send_413(send, self.max_bytes)
        elif state["slow"]:
            logger.info(
                "refused %s %s: body not received in %s s", scope["method"], scope["path"], self.timeout_s
            )
            await send_json_error(
                send, 408, f"request body not received within {self.timeout_s:g} s", close=True
            )
