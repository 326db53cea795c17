"""How many decoded pixels the process holds at once: a blocking budget shared by all requests.

Encoded uploads are small; decoded they are not (a 6000×6000 PNG of one colour is ~120 KB on the wire
and 108 MB as RGB). Every decode reserves its images' pixel count here first and releases it once the
images are embedded, so the decoded pixels alive in the process never exceed the capacity, however
many requests run at once (issue #15, item 6). Requests over the capacity wait; none is refused here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["PixelBudget", "plan_chunks"]

T = TypeVar("T")


class PixelBudget:
    """A counting budget of decoded pixels (width × height), shared by threads.

    Args:
        capacity: pixels that may be reserved at once; a reservation larger than the capacity is
            clamped to it (it then waits until nothing else is reserved).

    Raises:
        ValueError: ``capacity`` < 1.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._used = 0
        self._cond = threading.Condition()

    @property
    def capacity(self) -> int:
        """Pixels that may be reserved at once."""
        return self._capacity

    @property
    def in_use(self) -> int:
        """Pixels reserved now."""
        with self._cond:
            return self._used

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget for the ``with`` block, waiting until they are free.

        Args:
            pixels: decoded pixels the block will hold (>= 0).

        Raises:
            ValueError: ``pixels`` < 0.
        """
        if pixels < 0:
            raise ValueError(f"pixels must be >= 0, got {pixels}")
        amount = min(pixels, self._capacity)
        with self._cond:
            self._cond.wait_for(lambda: self._used + amount <= self._capacity)
            self._used += amount
        try:
            yield
        finally:
            with self._cond:
                self._used -= amount
                self._cond.notify_all()


def plan_chunks(
    items: Sequence[T], pixels: Callable[[T], int], *, max_pixels: int, max_items: int
) -> list[list[T]]:
    """Split items, in order, into chunks of at most ``max_items`` items and ``max_pixels`` pixels.

    An item larger than ``max_pixels`` on its own forms a chunk of one.

    Args:
        items: what to split (e.g. images to decode).
        pixels: pixel count of one item.
        max_pixels: most pixels per chunk (>= 1).
        max_items: most items per chunk (>= 1).

    Returns:
        The chunks; empty when ``items`` is.
    """
    if max_pixels < 1 or max_items < 1:
        raise ValueError(f"max_pixels and max_items must be >= 1, got {max_pixels} and {max_items}")
    chunks: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        size = pixels(item)
        if current and (total + size > max_pixels or len(current) >= max_items):
            chunks.append(current)
            current, total = [], 0
        current.append(item)
        total += size
    if current:
        chunks.append(current)
    return chunks
