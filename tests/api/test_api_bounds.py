"""Input bounds (api/_bounds.py): the checks themselves, and each hostile request of issue 15 answered
with 422 (never 5xx) and nothing stored, on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from api_testkit import image_bytes, search, upload
from fastapi.testclient import TestClient

from vireid.api import Settings
from vireid.api._bounds import (
    MAX_DATETIME,
    MAX_FILTER_CAMERAS,
    MAX_ITEM_ID,
    MIN_DATETIME,
    MIN_ITEM_ID,
    check_camera_filter,
    check_datetime,
    check_text,
)
from vireid.api.errors import InvalidInputError

_seeds = itertools.count(1000)


@pytest.fixture
def db_client(make_client: Callable[..., TestClient], db_settings: Settings) -> TestClient:
    return make_client(db_settings)


def _post_gallery(client: TestClient, filename: str = "a.jpg", **fields: str) -> dict:
    """POST /gallery of one new image; returns status and body."""
    files = [("images", (filename, image_bytes(next(_seeds)), "image/jpeg"))]
    response = client.post("/gallery", files=files, data={"camera": "cam1", "modality": "visible", **fields})
    return {"status": response.status_code, "body": response.json()}


def _post_search(client: TestClient, **fields: str) -> dict:
    files = {"image": ("q.jpg", image_bytes(1), "image/jpeg")}
    response = client.post("/search", files=files, data=fields)
    return {"status": response.status_code, "body": response.json()}


def _assert_refused(result: dict, *words: str) -> None:
    assert result["status"] == 422, result
    detail = result["body"]["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail


# --- the checks ---------------------------------------------------------------------------------------


def test_check_datetime_converts_to_utc_and_bounds_the_range() -> None:
    assert check_datetime(None, name="t") is None
    assert check_datetime(datetime(2024, 1, 1, 12), name="t") == datetime(2024, 1, 1, 12, tzinfo=timezone.utc)
    plus2 = timezone(timedelta(hours=2))
    assert check_datetime(datetime(2024, 1, 1, 12, tzinfo=plus2), name="t") == datetime(
        2024, 1, 1, 10, tzinfo=timezone.utc
    )
    assert check_datetime(MIN_DATETIME, name="t") == MIN_DATETIME
    assert check_datetime(MAX_DATETIME, name="t") == MAX_DATETIME
    for bad in (
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),  # overflows when converted to UTC
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))),  # overflows
        datetime(1, 1, 1),  # representable but under the one-day margin
        MAX_DATETIME + timedelta(microseconds=1),
    ):
        with pytest.raises(InvalidInputError, match=r"since: .* outside the accepted range"):
            check_datetime(bad, name="since")


@pytest.mark.parametrize("char", ["\x00", "\x01", "\t", "\n", "\x1b", "\x7f", "\x85", "\ud800"])
def test_check_text_refuses_control_characters(char: str) -> None:
    with pytest.raises(InvalidInputError, match=f"camera: control character U\\+{ord(char):04X}"):
        check_text(f"a{char}b", name="camera", max_chars=64)


def test_check_text_length_and_ordinary_text() -> None:
    assert check_text("Eingang Süd – 2 ✓", name="camera", max_chars=64) == "Eingang Süd – 2 ✓"
    with pytest.raises(InvalidInputError, match="empty"):
        check_text("", name="camera", max_chars=64)
    with pytest.raises(InvalidInputError, match="longer than 3"):
        check_text("abcd", name="camera", max_chars=3)


def test_check_camera_filter() -> None:
    assert check_camera_filter(None) is None
    assert check_camera_filter([" b", "a", "b", " "]) == ["a", "b"]
    assert len(check_camera_filter([f"c{i}" for i in range(MAX_FILTER_CAMERAS)]) or []) == MAX_FILTER_CAMERAS
    with pytest.raises(InvalidInputError, match=f"at most {MAX_FILTER_CAMERAS}"):
        check_camera_filter([f"c{i}" for i in range(MAX_FILTER_CAMERAS + 1)])
    with pytest.raises(InvalidInputError, match="at least one"):
        check_camera_filter([" ", ""])
    with pytest.raises(InvalidInputError, match="control character"):
        check_camera_filter(["a\x00b"])
    with pytest.raises(InvalidInputError, match="longer than 64"):
        check_camera_filter(["x" * 65])


# --- 1. timestamps out of range -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "captured_at", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00"]
)
def test_captured_at_out_of_range_is_422(db_client: TestClient, captured_at: str) -> None:
    _assert_refused(_post_gallery(db_client, captured_at=captured_at), "captured_at", "accepted range")
    assert db_client.get("/gallery/stats").json()["total"] == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"since": "0001-01-01T00:00:00+01:00"},
        {"until": "9999-12-31T23:59:59-05:00"},
        {"since": "0001-01-01T00:00:00+01:00", "until": "9999-12-31T23:59:59-05:00"},
        {"until": "9999-12-31T23:59:59.999999"},
    ],
)
def test_since_until_out_of_range_is_422(db_client: TestClient, fields: dict[str, str]) -> None:
    upload(db_client, [image_bytes(1)], captured_at="2024-01-01T00:00:00Z")
    _assert_refused(_post_search(db_client, **fields), "accepted range")


def test_timestamps_at_the_bounds_round_trip(db_client: TestClient) -> None:
    low = _post_gallery(db_client, captured_at="0001-01-02T00:00:00Z")
    high = _post_gallery(db_client, captured_at="9999-12-30T23:59:59.999999+00:00")
    assert low["status"] == high["status"] == 201
    low_id, high_id = low["body"]["ids"][0], high["body"]["ids"][0]
    assert db_client.get(f"/gallery/{low_id}").json()["captured_at"] == "0001-01-02T00:00:00Z"
    assert db_client.get(f"/gallery/{high_id}").json()["captured_at"] == "9999-12-30T23:59:59.999999Z"
    window = {"since": "0001-01-02T00:00:00Z", "until": "9999-12-30T23:59:59.999999Z", "k": "10"}
    found = [m["id"] for m in search(db_client, image_bytes(1), **window)["matches"]]
    assert found == [low_id]  # until is exclusive


# --- 2. ids outside the signed 64-bit range -----------------------------------------------------------


@pytest.mark.parametrize("item_id", [MAX_ITEM_ID + 1, MIN_ITEM_ID - 1, 10**30])
def test_ids_outside_int64_are_422(db_client: TestClient, item_id: int) -> None:
    upload(db_client, [image_bytes(1)])
    for response in (db_client.get(f"/gallery/{item_id}"), db_client.delete(f"/gallery/{item_id}")):
        assert response.status_code == 422, response.text
        assert "item_id" in response.json()["detail"]
    assert db_client.get("/gallery/stats").json()["total"] == 1


@pytest.mark.parametrize("item_id", [MAX_ITEM_ID, MIN_ITEM_ID, -1, 0])
def test_ids_at_the_int64_bounds_are_404(db_client: TestClient, item_id: int) -> None:
    assert db_client.get(f"/gallery/{item_id}").status_code == 404
    assert db_client.delete(f"/gallery/{item_id}").status_code == 404


# --- 3. NUL and control characters in text fields ------------------------------------------------------


@pytest.mark.parametrize("field", ["camera", "track_id", "source"])
@pytest.mark.parametrize("char", ["\x00", "\x1b", "\n"])
def test_control_characters_in_gallery_fields_are_422(db_client: TestClient, field: str, char: str) -> None:
    _assert_refused(_post_gallery(db_client, **{field: f"a{char}b"}), field, "control character")
    assert db_client.get("/gallery/stats").json()["total"] == 0


def test_control_characters_in_the_upload_file_name_are_422(db_client: TestClient) -> None:
    # httpx percent-encodes control characters in file names, so the body is written by hand.
    boundary = "b0undary"
    part = 'Content-Disposition: form-data; name="{}"'
    body = b"".join(
        [
            f"--{boundary}\r\n{part.format('camera')}\r\n\r\ncam1\r\n".encode(),
            f"--{boundary}\r\n{part.format('modality')}\r\n\r\nvisible\r\n".encode(),
            f'--{boundary}\r\n{part.format("images")}; filename="a\x00b.jpg"\r\n'.encode(),
            b"Content-Type: image/jpeg\r\n\r\n" + image_bytes(next(_seeds)) + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = db_client.post("/gallery", content=body, headers=headers)
    _assert_refused({"status": response.status_code, "body": response.json()}, "source", "control character")
    assert db_client.get("/gallery/stats").json()["total"] == 0


@pytest.mark.parametrize("cameras", ["a\x00b", "cam1,a\x00b", "cam1,x\x7f"])
def test_control_characters_in_the_camera_filter_are_422(db_client: TestClient, cameras: str) -> None:
    upload(db_client, [image_bytes(1)])
    _assert_refused(_post_search(db_client, cameras=cameras), "cameras", "control character")


# --- 4. list parameters with a maximum count ------------------------------------------------------------


def test_camera_filter_over_the_maximum_count_is_422(
    make_client: Callable[..., TestClient], db_settings: Settings
) -> None:
    # 70,000 names: over psycopg's 65,535 bind parameters; the body (~550 kB) needs a larger limit.
    client = make_client(db_settings.model_copy(update={"max_upload_bytes": 1024 * 1024}))
    upload(client, [image_bytes(1)])
    cameras = ",".join(f"cam{i}" for i in range(70_000))
    _assert_refused(_post_search(client, cameras=cameras), "cameras", f"at most {MAX_FILTER_CAMERAS}")


def test_camera_filter_at_the_maximum_count_works(db_client: TestClient) -> None:
    ids = upload(db_client, [image_bytes(1)], camera="cam999")
    cameras = ",".join(f"cam{i}" for i in range(MAX_FILTER_CAMERAS))
    result = _post_search(db_client, cameras=cameras)
    assert result["status"] == 200, result
    assert [m["id"] for m in result["body"]["matches"]] == ids
