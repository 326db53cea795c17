"""Property-based fuzzing of the OpenAPI schema against a live server (issue #15, item 9), on SQLite and
PostgreSQL: no 5xx, every response conforms to the documented schema, status and content type.

Schemathesis draws the requests from the app's own OpenAPI document, valid ones and ones that break it
(wrong types, out-of-range values, missing fields); image fields (``POST /search``'s repeated ``image``,
``POST /gallery``'s ``images``) are either the random bytes it draws or, three times in four, one to
three real small JPEG / PNG / BMP files, so that the routes get past decoding
and their other fields (camera names, timestamps, ids, ``k``, filters) meet the database. The examples
are bounded and derandomised, so a run is repeatable and takes seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from api_testkit import FakeEmbedder, image_bytes

from vireid.api import Settings, create_app

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

EXAMPLES_PER_OPERATION = 40
IMAGES = [image_bytes(seed, fmt) for seed in range(4) for fmt in ("JPEG", "PNG", "BMP")]


@pytest.fixture
def live_url(db_settings: Settings) -> Iterator[str]:
    app = create_app(db_settings, embedder=FakeEmbedder())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


def _with_real_images(body: Any, data: Any) -> Any:
    if not isinstance(body, dict):
        return body
    for field in ("image", "images"):  # POST /search's query crop(s), POST /gallery's crops
        if (
            isinstance(body.get(field), list)
            and body[field]
            and data.draw(st.integers(0, 3), label=f"real {field}") > 0  # 3 in 4: past decoding
        ):
            images = data.draw(st.lists(st.sampled_from(IMAGES), min_size=1, max_size=3))
            # 1 in 4 of those are a plain valid request (required fields only), so that requests reach
            # the services however many optional fields the schema grows.
            if data.draw(st.integers(0, 3), label=f"plain request with {field}") == 0:
                required = {"camera": "cam1", "modality": "visible"} if field == "images" else {}
                return {**required, field: images}
            body = {**body, field: images}
    return body


def _fuzz(operation: Any, *, url: str, checks: list[Any], codes: set[int]) -> None:
    cases = st.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )

    @hypothesis.given(case=cases, data=st.data())
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def exercise(case: Any, data: Any) -> None:
        case.body = _with_real_images(case.body, data)
        response = case.call_and_validate(base_url=url, checks=checks, timeout=30)
        codes.add(response.status_code)

    exercise()


def test_fuzzed_requests_get_documented_non_5xx_answers(live_url: str, db_settings: Settings) -> None:
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    app = create_app(db_settings, embedder=FakeEmbedder())  # only for its OpenAPI document
    schema = schemathesis.openapi.from_dict(app.openapi())
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        _fuzz(operation, url=live_url, checks=checks, codes=seen.setdefault(label, set()))
    # The fuzzer got past validation into the services (not only 422s).
    assert 201 in seen["POST /gallery"] and 200 in seen["POST /search"], seen


def test_malformed_multipart_is_a_documented_400(client: Any) -> None:
    response = client.post(
        "/gallery",
        content=b'--xyz\r\nContent-Disposition: form-data; name="camera"\r\n\r\nc1\r\n--xyz--\r\n',
        headers={"Content-Type": "multipart/form-data"},  # no boundary
    )
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    spec = client.app.openapi()
    for path, method in (("/gallery", "post"), ("/search", "post")):
        assert "400" in spec["paths"][path][method]["responses"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
