"""api/errors.py: an unexpected server error is a complete JSON 500 and the connection stays usable."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from api_testkit import FakeEmbedder, image_bytes
from fastapi.testclient import TestClient

from vireid.api import Settings, create_app


def _failing_embedder() -> FakeEmbedder:
    fake = FakeEmbedder()
    fake.fail_after = 0  # every embed call raises RuntimeError: an error no handler knows
    return fake


def test_unexpected_error_is_a_json_500_and_does_not_escape_the_app(settings: Settings) -> None:
    # raise_server_exceptions=True: any exception that leaves the app would be raised here. The server
    # (uvicorn) closes the connection of a request whose app raised, so none may leave it.
    app = create_app(settings, embedder=_failing_embedder())
    with TestClient(app, raise_server_exceptions=True) as client:
        response = client.post("/search", files={"image": ("q.jpg", image_bytes(1), "image/jpeg")})
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error"}
        assert 'route="/search",status="500"' in client.get("/metrics").text
        assert client.get("/healthz").status_code == 200


@pytest.fixture
def live_server(settings: Settings) -> Iterator[int]:
    """The app with a failing embedder under uvicorn on a loopback port; yields the port."""
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_app(settings, embedder=_failing_embedder())
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_keep_alive_connection_survives_a_500(live_server: int) -> None:
    request = httpx.Request(
        "POST", "http://test/search", files={"image": ("q.jpg", image_bytes(1), "image/jpeg")}
    )
    body = request.read()
    headers = {"Content-Type": request.headers["content-type"]}
    conn = http.client.HTTPConnection("127.0.0.1", live_server, timeout=30)
    try:
        conn.request("POST", "/search", body=body, headers=headers)
        first = conn.getresponse()
        assert first.status == 500
        assert (first.getheader("connection") or "").lower() != "close"
        assert json.loads(first.read()) == {"detail": "internal server error"}
        sock = conn.sock
        assert sock is not None
        local = sock.getsockname()
        # The next request goes over the same connection; a server that dropped it would make this
        # raise RemoteDisconnected / ConnectionResetError.
        conn.request("GET", "/healthz")
        second = conn.getresponse()
        assert second.status == 200
        assert json.loads(second.read()) == {"status": "ok"}
        assert conn.sock is sock and sock.getsockname() == local
    finally:
        conn.close()
