"""Against a live uvicorn server over raw sockets (issue #15, item 7): the API key of a write route is
checked before its body is read, and a body that arrives too slowly is answered 408."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from api_testkit import FakeEmbedder
from pydantic import SecretStr

from vireid.api import Settings, create_app
from vireid.api._auth import needs_api_key


@pytest.fixture
def serve() -> Iterator[Callable[[Settings], int]]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings: Settings) -> int:
        config = uvicorn.Config(
            create_app(settings, embedder=FakeEmbedder()), host="127.0.0.1", port=0, log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return int(server.servers[0].sockets[0].getsockname()[1])

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def _send_head(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def _response(sock: socket.socket, timeout: float) -> tuple[str, float]:
    """The response bytes received until the server closes or ``timeout``; and when the first came."""
    sock.settimeout(timeout)
    start = time.monotonic()
    chunks: list[bytes] = []
    first = float("inf")
    try:
        while chunk := sock.recv(65536):
            first = min(first, time.monotonic() - start)
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"}' in chunks[-1]:
                break
    except TimeoutError:
        pass
    return b"".join(chunks).decode("latin-1"), first


def _upload_head(length: int, key: str | None = None) -> str:
    lines = [
        "POST /gallery HTTP/1.1",
        "Host: test",
        "Content-Type: multipart/form-data; boundary=xyz",
        f"Content-Length: {length}",
    ]
    if key is not None:
        lines.append(f"X-API-Key: {key}")
    return "\r\n".join(lines) + "\r\n"


def test_key_checked_before_the_body_is_read(serve: Callable[[Settings], int], settings: Settings) -> None:
    port = serve(settings.model_copy(update={"api_key": SecretStr("s3cret"), "body_timeout_s": 30.0}))
    # 200 KB announced, none sent: the answer cannot wait for the body.
    for key in (None, "wrong"):
        sock = _send_head(port, _upload_head(200_000, key))
        text, first = _response(sock, timeout=5)
        sock.close()
        assert text.startswith("HTTP/1.1 401"), text
        assert "connection: close" in text.lower()
        assert "missing or invalid X-API-Key" in text
        assert first < 2.0


def test_valid_key_reads_the_body_and_a_slow_one_is_408(
    serve: Callable[[Settings], int], settings: Settings
) -> None:
    port = serve(settings.model_copy(update={"api_key": SecretStr("s3cret"), "body_timeout_s": 1.0}))
    sock = _send_head(port, _upload_head(200_000, "s3cret"), body=b"--xyz\r\n")
    text, first = _response(sock, timeout=10)
    sock.close()
    assert text.startswith("HTTP/1.1 408"), text
    assert "connection: close" in text.lower()
    assert "request body not received within 1 s" in text
    assert 0.8 < first < 5.0


def test_slow_body_without_a_configured_key_is_408(
    serve: Callable[[Settings], int], settings: Settings
) -> None:
    port = serve(settings.model_copy(update={"body_timeout_s": 0.5}))
    sock = _send_head(port, _upload_head(5_000), body=b"--xyz\r\n")
    time.sleep(0.2)
    sock.sendall(b"Content-Disposition: form-data;")  # trickles on, but too slowly
    text, _ = _response(sock, timeout=10)
    sock.close()
    assert text.startswith("HTTP/1.1 408"), text


def test_search_needs_no_key_and_the_key_routes_are_the_write_routes() -> None:
    from vireid.api.routes import gallery_router, health_router, models_router, search_router

    protected = {
        (method, route.path)  # type: ignore[attr-defined]
        for router in (health_router, search_router, gallery_router, models_router)
        for route in router.routes
        if needs_api_key(route)
        for method in route.methods  # type: ignore[attr-defined]
    }
    assert protected == {
        ("POST", "/gallery"),
        ("DELETE", "/gallery/{item_id}"),
        ("POST", "/models/{version}/activate"),
        ("DELETE", "/models/{version}"),
    }
