"""Memory the process freed, handed back to the system before a step that fills memory again.

The steps before the embedding step (snapshot, chunks) free hundreds of MB of small objects, which
the C allocator keeps in its heap for reuse. What the next step holds (the static tier's
tokenizer and table, about 520 MB; the store audit's sampled scan, 80-90 MB at 100k) then lands on
top of them, and that sum is the run's peak RSS. ``malloc_trim`` returns the free pages in the
heap to the system (glibc only; elsewhere nothing happens).
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # the C library already loaded in this process: no lookup, no subprocess
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Collect garbage, then return the heap's free pages to the system; False where the C
    library cannot (the collection still happens)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
