"""Bounds on client input, in one place: ids, timestamps, text fields and list parameters.

The services call these checks at their boundary, so the HTTP routes and the commands refuse the same
values, with :class:`~vireid.api.errors.InvalidInputError` (HTTP 422), before they reach SQL. The
bounds are the same on SQLite and PostgreSQL and are listed in ``docs/api.md`` ("Input bounds").
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Annotated, Final

from fastapi import Path

from vireid.api.errors import InvalidInputError

__all__ = [
    "MAX_CAMERA_CHARS",
    "MAX_DATETIME",
    "MAX_FILTER_CAMERAS",
    "MAX_ITEM_ID",
    "MAX_K",
    "MAX_SOURCE_CHARS",
    "MAX_TRACK_ID_CHARS",
    "MAX_TUNING",
    "MIN_DATETIME",
    "MIN_ITEM_ID",
    "ItemIdPath",
    "check_camera_filter",
    "check_datetime",
    "check_text",
    "is_item_id",
]

#: Gallery ids are 64-bit signed integers in SQL (and in the FAISS index).
MIN_ITEM_ID: Final = -(2**63)
MAX_ITEM_ID: Final = 2**63 - 1

#: Accepted timestamps, after conversion to UTC: Python's datetime range less one day at each end, so
#: that any UTC offset, and any database session time zone, can still represent the value.
MIN_DATETIME: Final = datetime(1, 1, 2, tzinfo=timezone.utc)
MAX_DATETIME: Final = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=timezone.utc)

#: Longest text fields (the sizes of the SQL columns).
MAX_CAMERA_CHARS: Final = 64
MAX_TRACK_ID_CHARS: Final = 128
MAX_SOURCE_CHARS: Final = 1024

#: Most camera names in one search filter (``POST /search`` ``cameras``, ``vireid search --cameras``).
MAX_FILTER_CAMERAS: Final = 1000
#: Largest number of results one search may ask for.
MAX_K: Final = 1000
#: Largest ``nprobe`` / ``ef_search`` of one search (FAISS caps nprobe at the list count anyway).
MAX_TUNING: Final = 65536

ItemIdPath = Annotated[
    int,
    Path(ge=MIN_ITEM_ID, le=MAX_ITEM_ID, description="Gallery item id (signed 64-bit integer)."),
]
"""A gallery id in a URL path: outside the signed 64-bit range FastAPI answers 422."""


def is_item_id(value: int) -> bool:
    """True when ``value`` can be a stored gallery id (signed 64-bit range)."""
    return MIN_ITEM_ID <= value <= MAX_ITEM_ID


def check_datetime(value: datetime | None, *, name: str) -> datetime | None:
    """A timestamp as a timezone-aware UTC datetime within [:data:`MIN_DATETIME`, :data:`MAX_DATETIME`].

    Naive values are taken to be UTC; aware ones are converted.

    Args:
        value: the timestamp, or None (returned as is).
        name: the field name used in the error message.

    Raises:
        InvalidInputError: the value is outside the range (also when converting it to UTC overflows).
    """
    if value is None:
        return None
    utc: datetime | None
    try:
        naive = value.utcoffset() is None
        utc = value.replace(tzinfo=timezone.utc) if naive else value.astimezone(timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not MIN_DATETIME <= utc <= MAX_DATETIME:
        raise InvalidInputError(
            f"{name}: {value.isoformat()} is outside the accepted range "
            f"{MIN_DATETIME.isoformat()} to {MAX_DATETIME.isoformat()}"
        )
    return utc


def _control_character(text: str) -> str | None:
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs"):
            return char
    return None


def check_text(value: str, *, name: str, max_chars: int) -> str:
    """A non-empty text field of at most ``max_chars`` characters without control characters.

    Control characters are the Unicode category ``Cc`` (NUL, tab, line breaks, DEL, C1 controls) and
    lone surrogates (``Cs``); PostgreSQL cannot store NUL at all, so both databases refuse them alike.

    Args:
        value: the text as given (not stripped).
        name: the field name used in the error message.
        max_chars: the largest accepted length.

    Raises:
        InvalidInputError: empty, too long or holding a control character.
    """
    if not value:
        raise InvalidInputError(f"{name}: must not be empty")
    if len(value) > max_chars:
        raise InvalidInputError(f"{name}: longer than {max_chars} characters ({len(value)})")
    bad = _control_character(value)
    if bad is not None:
        raise InvalidInputError(f"{name}: control character U+{ord(bad):04X} is not allowed")
    return value


def check_camera_filter(names: Sequence[str] | None) -> list[str] | None:
    """The distinct camera names of a search filter, sorted; None means no filter.

    Names are stripped and blank ones dropped; each must pass :func:`check_text` with
    :data:`MAX_CAMERA_CHARS`.

    Raises:
        InvalidInputError: more than :data:`MAX_FILTER_CAMERAS` names, no name left, or a bad name.
    """
    if names is None:
        return None
    if len(names) > MAX_FILTER_CAMERAS:
        raise InvalidInputError(f"cameras: at most {MAX_FILTER_CAMERAS} names, got {len(names)}")
    kept = {name.strip() for name in names if name.strip()}
    if not kept:
        raise InvalidInputError("cameras must name at least one camera")
    return sorted(check_text(name, name="cameras", max_chars=MAX_CAMERA_CHARS) for name in kept)
