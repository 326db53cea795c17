"""ASGI middleware that checks the API key of write routes before a byte of the request body is read.

A route needs the key when it depends on :func:`vireid.api.deps.require_api_key` (the dependency stays
on the route too, so OpenAPI documents the header and a route reached another way is still checked).
Without this middleware FastAPI would parse the whole multipart body before the dependency runs, so an
unauthenticated client could make the server read up to the body limit, slowly (issue #15, item 7).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from vireid.api._asgi import body_announced, header, send_json_error
from vireid.api.deps import API_KEY_REFUSED, api_key_accepted, require_api_key
from vireid.api.settings import Settings

__all__ = ["ApiKeyBeforeBodyMiddleware", "needs_api_key"]

logger = logging.getLogger(__name__)


def _depends_on(dependant: Dependant, target: Callable[..., object]) -> bool:
    return any(d.call is target or _depends_on(d, target) for d in dependant.dependencies)


def needs_api_key(route: BaseRoute) -> bool:
    """True for a FastAPI route that depends (directly or through another dependency) on the API key."""
    return isinstance(route, APIRoute) and _depends_on(route.dependant, require_api_key)


class ApiKeyBeforeBodyMiddleware:
    """Answer 401 to a request for a key-protected route whose ``X-API-Key`` is missing or wrong,
    without reading its body (the response says ``Connection: close``).

    Args:
        app: the wrapped ASGI app.
        settings: where the key comes from (no check when ``settings.api_key`` is unset).
        routes: the routes to check: those of the ``APIRouter`` objects the app includes without a
            further prefix (their paths are the app's paths).
    """

    def __init__(self, app: ASGIApp, *, settings: Settings, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.settings = settings
        self.routes = routes
        self._cache: dict[int, bool] = {}

    def _protected(self, scope: Scope) -> bool:
        routes: Iterable[BaseRoute] = (r for r in self.routes if self._needs_key(r))
        return any(route.matches(scope)[0] == Match.FULL for route in routes)

    def _needs_key(self, route: BaseRoute) -> bool:
        key = id(route)
        if key not in self._cache:
            self._cache[key] = needs_api_key(route)
        return self._cache[key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.settings.api_key is None
            or api_key_accepted(self.settings, header(scope, b"x-api-key"))
            or not self._protected(scope)
        ):
            await self.app(scope, receive, send)
            return
        logger.info("refused %s %s: missing or invalid X-API-Key", scope["method"], scope["path"])
        await send_json_error(
            send,
            401,
            API_KEY_REFUSED,
            headers=[(b"www-authenticate", b"ApiKey")],
            close=body_announced(scope),
        )
