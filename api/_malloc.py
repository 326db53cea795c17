"""Hand large freed buffers back to the operating system (glibc only).

A decoded upload is one large buffer (a 6000×6000 RGB image is 108 MB, in Pillow's 16 MB blocks).
glibc serves such requests with ``mmap`` at first, but after the first of them is freed it raises its
mmap threshold (up to 32 MB) and later ones come from a per-thread heap arena, which keeps the freed
memory. With the request threads each keeping their own arena, resident memory grows with the
number of threads, although the decode budget bounds the pixels alive at any time (measured in
``benchmarks/upload_memory.py``: 8 concurrent 36-Mpx searches, peak RSS 1.2 GB without this, 0.35 GB with
it). Fixing the threshold with ``mallopt(M_MMAP_THRESHOLD, ...)`` turns the dynamic adjustment off, so
every allocation over it is mmapped and returned to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "release_large_buffers_to_os"]

logger = logging.getLogger(__name__)

#: Allocations over this size are mmapped (and unmapped on free).
MMAP_THRESHOLD_BYTES = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>


def release_large_buffers_to_os() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES` for this process.

    Returns:
        True when set; False where the C library is not glibc (macOS, Windows, musl) or refused it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only; musl's mallopt does nothing
        gnu_get_libc_version.restype = ctypes.c_char_p
        version = gnu_get_libc_version().decode()
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
    logger.debug("glibc %s: mmap threshold fixed at %d bytes: %s", version, MMAP_THRESHOLD_BYTES, done)
    return done
