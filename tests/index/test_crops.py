"""The content-addressed crop store and its journal (issue #12, item 1)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vireid.index import CropStore, sniff_media_type

PNG = b"\x89PNG\r\n\x1a\n" + b"rest of a png"
JPEG = b"\xff\xd8\xff\xe0" + b"rest of a jpeg"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_put_read_and_layout(tmp_path: Path) -> None:
    store = CropStore(tmp_path)
    sha = _sha(PNG)
    assert store.read(sha) is None and not store.has(sha)
    assert store.put(sha, PNG) is True
    assert store.put(sha, PNG) is False  # already there
    assert store.read(sha) == PNG
    assert store.path(sha) == tmp_path.resolve() / "crops" / sha[:2] / sha
    with pytest.raises(ValueError, match="do not hash"):
        store.put(_sha(JPEG), PNG)
    with pytest.raises(ValueError, match="SHA-256"):
        store.path("../../etc/passwd")


def test_transaction_keeps_referenced_and_drops_orphans(tmp_path: Path) -> None:
    store = CropStore(tmp_path)
    kept, dropped = _sha(PNG), _sha(JPEG)
    with store.transaction([kept, dropped], referenced=lambda shas: shas & {kept}):
        store.put(kept, PNG)
        store.put(dropped, JPEG)
    assert store.has(kept) and not store.has(dropped)
    assert list((store.root / ".pending").iterdir()) == []


def test_failed_transaction_leaves_no_crop(tmp_path: Path) -> None:
    store = CropStore(tmp_path)
    sha = _sha(PNG)
    with pytest.raises(RuntimeError), store.transaction([sha], referenced=lambda shas: set()):
        store.put(sha, PNG)
        raise RuntimeError("commit failed")
    assert not store.has(sha)


def test_recover_settles_journals_of_dead_writers_only(tmp_path: Path) -> None:
    store = CropStore(tmp_path)
    orphan, held, live_sha = _sha(PNG), _sha(JPEG), _sha(b"BM bitmap")
    for sha, data in ((orphan, PNG), (held, JPEG), (live_sha, b"BM bitmap")):
        store.put(sha, data)
    pending = store.root / ".pending"
    pending.mkdir()
    (pending / f"{_dead_pid()}-{'a' * 32}.json").write_text(json.dumps({"sha256": [orphan, held]}))
    import os

    live = pending / f"{os.getpid()}-{'b' * 32}.json"
    live.write_text(json.dumps({"sha256": [live_sha]}))
    (pending / f"{_dead_pid()}-{'c' * 32}.json").write_text("not json")

    removed = store.recover(referenced=lambda shas: shas & {held})

    assert removed == [orphan]
    assert not store.has(orphan) and store.has(held) and store.has(live_sha)
    assert sorted(p.name for p in pending.iterdir()) == [live.name]


def test_sniff_media_type() -> None:
    assert sniff_media_type(PNG) == "image/png"
    assert sniff_media_type(JPEG) == "image/jpeg"
    assert sniff_media_type(b"BM....") == "image/bmp"
    assert sniff_media_type(b"GIF89a") == "application/octet-stream"
