"""glibc's malloc, set for a long-running process whose threads make and drop large image buffers.

Measured under mixed load (bench/bench_api.py): the Python objects a finished job leaves are about
1 MB, yet each batch of quality-1 jobs raised a worker's RSS by ~160 MB that never came back, and
it kept rising (433-570 MB after a minute). glibc kept the freed image buffers: each thread that
allocates gets an arena of its own (up to 8 per core), and after the first large buffer is freed
glibc raises its mmap threshold (up to 32 MB), so later buffers come from those arenas, where free
pages stay mapped. Here buffers of IMAGE_BUFFER bytes or more are always mmapped (and so unmapped
when freed), threads share ARENAS arenas, and a job's end hands free pages back.
Elsewhere than glibc (musl, macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's <malloc.h>
M_ARENA_MAX = -8
IMAGE_BUFFER = 256 * 1024  # a 256x256 RGBA tile; a job's images and arrays are far larger
ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def configure() -> None:
    """Set malloc up for image work; call once a process is started, before its threads are."""
    if _LIBC is None:
        return
    if not (_LIBC.mallopt(M_MMAP_THRESHOLD, IMAGE_BUFFER) and _LIBC.mallopt(M_ARENA_MAX, ARENAS)):
        log.warning("mallopt refused the image-buffer settings; memory may grow under load")


def release_free_memory() -> None:
    """Give the pages malloc holds free back to the system (after a job has dropped its images)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
