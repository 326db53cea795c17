"""glibc's mmap threshold is fixed so that freed decode buffers go back to the system."""

from __future__ import annotations

import platform
import sys

import pytest

from vireid.api._malloc import release_large_buffers_to_os


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_sets_the_threshold_on_glibc() -> None:
    assert release_large_buffers_to_os() is True


def test_other_platforms_are_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert release_large_buffers_to_os() is False
