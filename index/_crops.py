"""The crop store: the encoded bytes of every gallery image, content-addressed by SHA-256.

Files: ``<data_dir>/crops/<sha[:2]>/<sha>`` (the bytes as uploaded; the format is read from their magic
bytes). One file serves every item with that digest, whatever its model version or modality, so a
re-embedding after a retrain reads the crops from here.

Crash safety (no SQL row without its crop, no orphan crop after a crash): a writer first records the
digests it is about to touch in a journal file ``crops/.pending/<pid>-<random>.json`` (fsynced), then
writes the crops (temp file + rename), commits its SQL transaction, and finally settles the journal:
each digest no SQL row references any more has its crop deleted, then the journal is removed. A writer
killed in between leaves its journal; :meth:`CropStore.recover` (run at start-up) settles the journals
of processes that are gone. Writers of several processes exclude each other with an advisory file lock
(``crops/.lock``, POSIX ``flock``) for the write-commit-settle section, so one cannot delete a crop
another is about to commit a row for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from vireid.index._atomic import _process_alive, atomic_write_bytes, remove_stale_temp_files

__all__ = ["CROPS_DIRNAME", "CropStore", "sniff_media_type"]

logger = logging.getLogger(__name__)

CROPS_DIRNAME = "crops"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_JOURNAL = re.compile(r"^(?P<pid>\d+)-[0-9a-f]{32}\.json$")

#: ``referenced(digests) -> the subset still held by an SQL row``.
Referenced = Callable[[set[str]], set[str]]


def sniff_media_type(data: bytes) -> str:
    """The media type of encoded image bytes from their magic bytes: ``image/jpeg``, ``image/png``,
    ``image/bmp``, else ``application/octet-stream``."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"BM"):
        return "image/bmp"
    return "application/octet-stream"


def _check_sha(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ValueError(f"not a lower-case hex SHA-256: {sha256!r}")
    return sha256


class _FileLock:
    """An exclusive advisory lock on a file across processes (``flock``; a no-op where unsupported),
    re-entrant within a process through a thread lock."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._local:
            if self._depth == 0:
                self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: in-process exclusion only
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def _release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class CropStore:
    """Content-addressed crops of one data directory, with a journal for crash safety.

    Args:
        data_dir: service data directory; crops live in ``<data_dir>/crops``.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self._root = Path(data_dir).expanduser().resolve() / CROPS_DIRNAME
        self._pending = self._root / ".pending"
        self._lock = _FileLock(self._root / ".lock")

    @property
    def root(self) -> Path:
        """The ``crops`` folder."""
        return self._root

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temp files of crop (and journal) writes whose process is gone (start-up)."""
        return remove_stale_temp_files(self._root)

    def path(self, sha256: str) -> Path:
        """Where the crop of ``sha256`` is (or would be) stored.

        Raises:
            ValueError: ``sha256`` is not 64 lower-case hex digits.
        """
        sha = _check_sha(sha256)
        return self._root / sha[:2] / sha

    def has(self, sha256: str) -> bool:
        """True when the crop of ``sha256`` is stored."""
        return self.path(sha256).is_file()

    def read(self, sha256: str) -> bytes | None:
        """The stored bytes of ``sha256``, or None when not stored."""
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, sha256: str, data: bytes) -> bool:
        """Store ``data`` under its digest unless already there (atomic write).

        Returns:
            True when written, False when it was already stored.

        Raises:
            ValueError: ``data`` does not hash to ``sha256``.
        """
        import hashlib

        target = self.path(sha256)
        if target.is_file():
            return False
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"crop bytes do not hash to {sha256}")
        atomic_write_bytes(target, data)
        return True

    @contextlib.contextmanager
    def transaction(self, sha256s: Iterable[str], referenced: Referenced) -> Iterator[None]:
        """Journal ``sha256s`` for the ``with`` block (which writes crops and commits SQL), then settle.

        Inside the block the caller stores the crops of new rows (:meth:`put`) and commits; or deletes
        rows and commits. On leaving, normally or by an exception, every journalled digest that
        ``referenced`` no longer reports is deleted from the store, then the journal is removed. Other
        processes' crop transactions wait (file lock).

        Args:
            sha256s: the digests the block may add or orphan.
            referenced: the subset of given digests that SQL rows hold (read after the block).
        """
        digests = sorted({_check_sha(s) for s in sha256s})
        if not digests:
            yield
            return
        with self._lock.hold():
            journal = self._write_journal(digests)
            try:
                yield
            finally:
                self._settle(journal, digests, referenced)

    def recover(self, referenced: Referenced) -> list[str]:
        """Settle the journals of crop transactions whose process is gone (start-up).

        Returns:
            The digests whose orphan crops were deleted (each logged).
        """
        if not self._pending.is_dir():
            return []
        removed: list[str] = []
        with self._lock.hold():
            for journal in sorted(self._pending.iterdir()):
                match = _JOURNAL.match(journal.name)
                if match is None or _process_alive(int(match.group("pid"))):
                    continue
                try:
                    digests = [_check_sha(s) for s in json.loads(journal.read_text())["sha256"]]
                except (OSError, ValueError, KeyError, TypeError):
                    logger.warning("unreadable crop journal %s: removed", journal)
                    journal.unlink(missing_ok=True)
                    continue
                removed.extend(self._settle(journal, digests, referenced))
        if removed:
            logger.info("crop store: removed %d crop(s) left without a gallery item by a crash", len(removed))
        return removed

    def _write_journal(self, digests: list[str]) -> Path:
        journal = self._pending / f"{os.getpid()}-{uuid.uuid4().hex}.json"
        atomic_write_bytes(journal, json.dumps({"sha256": digests}).encode())
        return journal

    def _settle(self, journal: Path, digests: list[str], referenced: Referenced) -> list[str]:
        orphans = sorted(set(digests) - referenced(set(digests)))
        for sha in orphans:
            self.path(sha).unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
        return orphans
