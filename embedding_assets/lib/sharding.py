"""Stable shard assignment of documents.

Shards must not move between processes, Python versions or machines, so the hash is
xxh3-64 of the UTF-8 doc_id (never Python's salted ``hash()``).
"""

from __future__ import annotations

import xxhash

SHARD_PREFIX = "shard-"


def shard_of(doc_id: str, num_shards: int) -> int:
    """Index in ``range(num_shards)`` of the shard that owns ``doc_id``."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return xxhash.xxh3_64_intdigest(doc_id.encode("utf-8", "surrogatepass")) % num_shards


def shard_key(index: int, num_shards: int) -> str:
    """Partition key of a shard; zero-padded so keys sort in shard order."""
    width = max(2, len(str(num_shards - 1)))
    return f"{SHARD_PREFIX}{index:0{width}d}"


def shard_keys(num_shards: int) -> list[str]:
    return [shard_key(i, num_shards) for i in range(num_shards)]


def shard_index(key: str) -> int:
    """Inverse of :func:`shard_key`."""
    if not key.startswith(SHARD_PREFIX):
        raise ValueError(f"not a shard partition key: {key!r}")
    return int(key[len(SHARD_PREFIX) :])
