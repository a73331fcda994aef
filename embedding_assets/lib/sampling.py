"""A uniform sample of doc_ids drawn in one pass, without knowing the collection's size first.

Bottom-k: every doc_id gets a salted 64-bit hash, and the sample is the ``size`` doc_ids with the
smallest hashes, every copy of each. A server that counts by scanning (SecantusDB) then needs one
scan for the sample and its population, not a count and a scan; memory stays at ``size`` ids.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np
import xxhash

T = TypeVar("T")


def salted_hash(key: str, salt: int) -> int:
    return xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass"), seed=salt)


def bottom_k(items: Iterable[T], size: int, key: Callable[[T], str], salt: int) -> tuple[list[T], int]:
    """The items whose keys are among the ``size`` distinct keys of smallest salted hash (all of
    an item's copies: items sharing a key are kept or dropped together), and how many items
    were read. Kept items come in the order they were read."""
    if size <= 0:
        return [], sum(1 for _ in items)
    kept: dict[str, list[tuple[int, T]]] = {}
    heap: list[tuple[int, str]] = []  # (-hash, key): heap[0] is the largest kept hash
    read = 0
    for item in items:
        k = key(item)
        copies = kept.get(k)
        if copies is not None:
            copies.append((read, item))
        else:
            h = salted_hash(k, salt)
            if len(heap) < size:
                heapq.heappush(heap, (-h, k))
                kept[k] = [(read, item)]
            elif (-h, k) > heap[0]:  # smaller than the largest kept: it takes that one's place
                _, gone = heapq.heapreplace(heap, (-h, k))
                del kept[gone]
                kept[k] = [(read, item)]
        read += 1
    return [item for _, item in sorted((c for cs in kept.values() for c in cs), key=lambda c: c[0])], read


class SeenKeys:
    """Keys seen in a scan, as 8-byte hashes (8 MB per million): asks whether a key was seen,
    with a false "seen" once in 2^64 / (keys seen) draws. Used where a "not seen" is confirmed
    by a query of its own, so that a scan spares the queries for everything it saw."""

    def __init__(self) -> None:
        self._added = array("Q")
        self._sorted: np.ndarray | None = None

    def add(self, key: str) -> None:
        self._added.append(salted_hash(key, 0))
        self._sorted = None

    def __len__(self) -> int:
        return len(self._added)

    def seen(self, keys: list[str]) -> set[str]:
        if self._sorted is None:
            self._sorted = np.sort(np.frombuffer(self._added, dtype=np.uint64))
        wanted = np.fromiter((salted_hash(k, 0) for k in keys), dtype=np.uint64, count=len(keys))
        at = np.searchsorted(self._sorted, wanted).clip(max=max(len(self._sorted) - 1, 0))
        hit = self._sorted[at] == wanted if len(self._sorted) else np.zeros(len(keys), bool)
        return {k for k, h in zip(keys, hit, strict=True) if h}
