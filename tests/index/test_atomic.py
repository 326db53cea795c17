"""Crash-safe writes and the removal of their leftovers (issue #15, item 8)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vireid.index import IndexStore
from vireid.index._atomic import LEGACY_TEMP_MIN_AGE_S, atomic_write_bytes, remove_stale_temp_files


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_name_carries_the_writer_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr("vireid.index._atomic.os.replace", spy)
    atomic_write_bytes(tmp_path / "visible.faiss", b"abc")
    assert (tmp_path / "visible.faiss").read_bytes() == b"abc"
    assert seen and seen[0].startswith(f".visible.faiss.{os.getpid()}-") and seen[0].endswith(".tmp")


def test_removes_only_leftovers_of_dead_writers(tmp_path: Path) -> None:
    folder = tmp_path / "indexes" / "v1"
    folder.mkdir(parents=True)
    dead = folder / f".visible.faiss.{_dead_pid()}-abcd1234.tmp"
    live = folder / f".visible.json.{os.getpid()}-abcd1234.tmp"
    old_legacy = folder / ".infrared.faiss.k3j_9x0a.tmp"
    new_legacy = folder / ".infrared.json.zz99aa11.tmp"
    other = [folder / "visible.faiss", folder / ".hidden.tmp", folder / "notes.tmp"]
    for path in [dead, live, old_legacy, new_legacy, *other]:
        path.write_bytes(b"x")
    now = time.time()
    os.utime(old_legacy, (now - LEGACY_TEMP_MIN_AGE_S - 10, now - LEGACY_TEMP_MIN_AGE_S - 10))

    removed = remove_stale_temp_files(tmp_path / "indexes", now=now)

    assert sorted(removed) == sorted([dead, old_legacy])
    assert not dead.exists() and not old_legacy.exists()
    assert live.exists() and new_legacy.exists() and all(p.exists() for p in other)


def test_missing_folder_is_fine(tmp_path: Path) -> None:
    assert remove_stale_temp_files(tmp_path / "nothing") == []


_WRITER = """
import os, sys, time
import vireid.index._atomic as atomic
def hang(fd):
    print("writing", flush=True)
    time.sleep(600)
atomic.os.fsync = hang
atomic.atomic_write_bytes(sys.argv[1], b"x" * 1_000_000)
"""


def test_kill_during_save_leaves_nothing_after_the_next_start(tmp_path: Path) -> None:
    """A writer SIGKILLed mid-save leaves its temp file; the next IndexStore start removes it."""
    store = IndexStore(tmp_path)
    target, _ = store.paths("v1", "visible")
    target.parent.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    leftovers = list(target.parent.glob(".*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 1_000_000
    assert not target.exists()

    restarted = IndexStore(tmp_path)
    assert restarted.remove_stale_temp_files() == leftovers
    assert list(target.parent.glob(".*.tmp")) == []
    # The store still works there afterwards.
    index = restarted.get("v1", "visible", dim=4)
    index.add(np.array([1], dtype=np.int64), np.eye(1, 4, dtype=np.float32))
    restarted.save("v1", "visible")
    assert target.exists() and list(target.parent.glob(".*.tmp")) == []
