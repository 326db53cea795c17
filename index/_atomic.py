"""Crash-safe file writes: temp file in the target folder, fsync, rename; removal of crash leftovers.

A temp file is named ``.<target name>.<pid>-<random>.tmp``: the writer's process id lets a later start
tell a leftover of a killed writer (no such process) from a file another live process is writing now.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path

__all__ = ["LEGACY_TEMP_MIN_AGE_S", "atomic_write_bytes", "remove_stale_temp_files"]

logger = logging.getLogger(__name__)

#: Temp files of :func:`atomic_write_bytes`: ``.<name>.<pid>-<mkstemp part>.tmp``; the pid is absent
#: in files written before it was part of the name.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<pid>\d+)-)?(?P<rand>[a-z0-9_]{8})\.tmp$")

#: A temp file without a pid in its name is removed only when older than this (seconds): its writer
#: cannot be identified, and no write of ours takes that long.
LEGACY_TEMP_MIN_AGE_S = 3600.0


def _fsync_dir(folder: Path) -> None:
    """Flush a folder entry so a rename survives a power loss (no-op where unsupported)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one.

    The bytes go to a uniquely named temp file in the same folder, which is fsynced and then moved
    over ``path`` with :func:`os.replace`. On any error the temp file is removed and ``path`` is
    untouched.

    Args:
        path: destination file; its folder is created if missing.
        data: the complete file content.

    Returns:
        The destination path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)
    return target


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_temp_files(root: str | Path, *, now: float | None = None) -> list[Path]:
    """Delete the temp files that writers killed during :func:`atomic_write_bytes` left under ``root``.

    A file is removed when its name has the temp-file pattern of :func:`atomic_write_bytes` and either
    the process id in its name is not a running process, or (names without a process id, written by
    older versions) it was last modified more than :data:`LEGACY_TEMP_MIN_AGE_S` ago. Files of live
    writers (another ``vireid`` process saving right now) and all other files are left alone. Each
    removal is logged at INFO.

    Args:
        root: folder searched recursively (e.g. ``<data_dir>/indexes``); a missing folder is fine.
        now: current time in seconds since the epoch (tests); default :func:`time.time`.

    Returns:
        The removed files.
    """
    folder = Path(root)
    if not folder.is_dir():
        return []
    clock = time.time() if now is None else now
    removed: list[Path] = []
    for path in sorted(folder.rglob(".*.tmp")):
        match = _TEMP_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        pid = match.group("pid")
        try:
            if pid is not None:
                stale = not _process_alive(int(pid))
            else:
                stale = clock - path.stat().st_mtime > LEGACY_TEMP_MIN_AGE_S
            if not stale:
                continue
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # its writer finished (renamed it) meanwhile
            continue
        logger.info("removed stale temp file %s (%d bytes) left by an interrupted write", path, size)
        removed.append(path)
    return removed
