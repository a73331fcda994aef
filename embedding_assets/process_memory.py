"""Memory the process freed, handed back to the system before a step that fills memory again.

The steps before the embedding step (snapshot, chunks) free hundreds of MB of small objects, which
the C allocator keeps in its heap for reuse. What the next step holds (the static tier's
tokenizer and table, about 520 MB; the store audit's sampled scan, 80-90 MB at 100k) then lands on
top of them, and that sum is the run's peak RSS. ``malloc_trim`` returns the free pages in the
heap to the system (glibc only; elsewhere nothing happens).

The static table is mapped from a file, not allocated: its pages count in RSS once read (about
256 MB at 100k documents, nearly every token), and no trim returns them. ``drop_mapped_pages``
does, once a run has no more use for them.

``allow_an_arena_per_thread`` keeps the C allocator from making threads share a heap, which
halved the embedding's speed where the tokenizer's two threads shared one.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import mmap
import os
from collections.abc import Callable

M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)
# glibc's own cap on the C heaps a process keeps (arenas): 8 per core on 64-bit systems
ARENAS_PER_CORE = 8
# what a run's process is allowed beyond that cap: one heap for each of its threads (it runs
# 20-30: pymongo's, polars', the read-ahead's, the publish's, the tokenizer's)
SPARE_ARENAS = 64


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # the C library already loaded in this process: no lookup, no subprocess
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def allow_an_arena_per_thread(spare: int = SPARE_ARENAS) -> bool:
    """Let every thread of this process keep a C heap (arena) of its own: glibc's cap of 8 per
    core is raised by ``spare``. False where the C library has no such setting (not glibc).

    Past the cap a new thread shares a heap, picked in turn without a lock: the static tokenizer's
    two worker threads, started with 16 heaps in use, were seen sharing one. Each then waited on
    the other's heap lock (12,600 futex calls a second, a third of a core in the kernel) and the
    embedding ran at 2,830-3,400 documents/s where it runs at 6,000-7,000 (docs/benchmarks.md).
    glibc fixes its cap once a process holds more than 8 heaps, so this is called where a run's
    process starts: importing the code location (definitions.py)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return mallopt(M_ARENA_MAX, ARENAS_PER_CORE * cores + spare) == 1


def release_freed_memory() -> bool:
    """Collect garbage, then return the heap's free pages to the system; False where the C
    library cannot (the collection still happens)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def drop_mapped_pages(array: object) -> bool:
    """Take the pages of a read-only memory-mapped array (``np.load(..., mmap_mode="r")``) out of
    this process's resident memory. They stay in the page cache: a later read maps them again
    (the static table, 250 MB: dropped in 2 ms, read whole again in 15 ms). False where the array
    is not mapped from a file."""
    mapped = getattr(array, "_mmap", None)
    if not isinstance(mapped, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    mapped.madvise(mmap.MADV_DONTNEED)
    return True
