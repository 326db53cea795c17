"""Service errors and their mapping to HTTP responses with a ``{"detail": "<message>"}`` body.

Services raise the exceptions below (never ``HTTPException``), so the same code serves the HTTP routes
and the command line. :func:`install_error_handlers` maps them, and request validation errors, to JSON
responses; no client input leads to a 5xx. Any other exception becomes a complete JSON 500 response
inside the app (:class:`UnhandledErrorMiddleware`), so the server keeps the client's connection open.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ConflictError",
    "InvalidInputError",
    "NotFoundError",
    "NotReadyError",
    "PayloadTooLargeError",
    "ServiceError",
    "UnauthorizedError",
    "UnhandledErrorMiddleware",
    "UnsupportedMediaTypeError",
    "format_validation_errors",
    "install_error_handlers",
    "public_reason",
    "redact_paths",
]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class of the errors a service reports to its caller; ``status_code`` is the HTTP status."""

    status_code: int = status.HTTP_500_INTERNAL_SERVER_ERROR

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInputError(ServiceError, ValueError):
    """Bad parameters or an image that cannot be decoded (HTTP 422)."""

    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT


class UnsupportedMediaTypeError(ServiceError, ValueError):
    """An image in a format the service does not accept (HTTP 415)."""

    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE


class PayloadTooLargeError(ServiceError, ValueError):
    """An upload over ``Settings.max_upload_bytes`` (HTTP 413)."""

    status_code = status.HTTP_413_CONTENT_TOO_LARGE


class NotFoundError(ServiceError, KeyError):
    """No gallery item with the requested id (HTTP 404)."""

    status_code = status.HTTP_404_NOT_FOUND

    def __str__(self) -> str:
        return self.detail


class ConflictError(ServiceError):
    """The request conflicts with the current state, e.g. activating an incompletely indexed model or
    deleting the active one (HTTP 409)."""

    status_code = status.HTTP_409_CONFLICT


class UnauthorizedError(ServiceError):
    """Missing or wrong ``X-API-Key`` (HTTP 401)."""

    status_code = status.HTTP_401_UNAUTHORIZED


class NotReadyError(ServiceError):
    """The model or the index is not loaded (HTTP 503)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


#: An absolute path: a separator not preceded by a word character, ``.``, ``:``, ``/`` or ``…`` (so relative
#: paths and ``scheme://host/...`` URLs are left alone), then its components; group 1 is the last.
_ABSOLUTE_PATH = re.compile(
    r"(?<![\w.:/\\…])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\:,;()]+[/\\])*([^\s'\"/\\:,;()]+)"
)
#: The file path inside an SQLite URL (``sqlite:////srv/gallery.db``).
_SQLITE_PATH = re.compile(r"(sqlite[\w+]*:///)(/[^\s'\"]*)")


def _last_component(match: re.Match[str]) -> str:
    return f"…/{match.group(1)}"


def redact_paths(text: str) -> str:
    """Replace each absolute file path in ``text`` by ``…/<last component>`` (error bodies name no
    server paths; the log keeps the full message). URLs other than SQLite file URLs are kept.

    Example: ``"no manifest.json in /srv/vireid/models/v3"`` → ``"no manifest.json in …/v3"``.
    """
    text = _SQLITE_PATH.sub(
        lambda m: m.group(1) + _ABSOLUTE_PATH.sub(_last_component, " " + m.group(2))[1:], text
    )
    return _ABSOLUTE_PATH.sub(_last_component, text)


def public_reason(exc: BaseException) -> str:
    """``"<exception type>: <message>"`` with server paths redacted, for a response body."""
    return f"{type(exc).__name__}: {redact_paths(str(exc))}"


def format_validation_errors(errors: Sequence[Any]) -> str:
    """Join pydantic/FastAPI validation errors into one message, e.g. ``"k: Input should be ≤ 1000"``.

    Args:
        errors: the ``errors()`` list of a ``RequestValidationError``.

    Returns:
        ``"<field>: <message>; ..."`` with the request part (``body``, ``query``) dropped from locations.
    """
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header", "form")]
        message = str(error.get("msg", "invalid value"))
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts) or "invalid request"


async def _service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.detail)
    headers = {"WWW-Authenticate": "ApiKey"} if isinstance(exc, UnauthorizedError) else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        {"detail": format_validation_errors(exc.errors())},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal server error"}, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
    )


_INTERNAL_ERROR_BODY = b'{"detail":"internal server error"}'


class UnhandledErrorMiddleware:
    """Answer an exception that escapes the routes with a JSON 500 instead of re-raising it.

    Starlette's own last-resort handler (``ServerErrorMiddleware``) sends its 500 response and then
    re-raises, and uvicorn closes the connection of any request whose app raised, without a
    ``Connection: close`` header: a keep-alive client's next request then fails with "connection reset
    by peer". This middleware sends the complete response and returns normally, so the connection stays
    usable. An exception after the response has started cannot be answered any more; it is re-raised
    so that the server drops the half-sent response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            logger.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            await send(
                {
                    "type": "http.response.start",
                    "status": status.HTTP_500_INTERNAL_SERVER_ERROR,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_INTERNAL_ERROR_BODY)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _INTERNAL_ERROR_BODY})


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app`` and :class:`UnhandledErrorMiddleware`.

    Call before adding other middleware: the middleware added first is the innermost, so the others
    (metrics, body limit) see the 500 as an ordinary response.
    """
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    # Last resort for an error raised outside UnhandledErrorMiddleware (in another middleware).
    app.add_exception_handler(Exception, _unexpected_error_handler)
    app.add_middleware(UnhandledErrorMiddleware)
