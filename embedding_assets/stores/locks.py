"""Short locks around the merge-and-write of one shard file (stores/shard_state.py).

A lock alone does not make racing runs safe (a run can read MongoDB before another and write
after it: lib/merge.py handles that); it makes each merge see the file as the last writer left
it. Held for one shard's read-merge-write, seconds at most, never across a run.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import redis
from upath import UPath


class ShardLocks(Protocol):
    def hold(self, name: str) -> AbstractContextManager[None]: ...


class FileLocks:
    """``flock`` on files under a local folder: released by the kernel if the holder dies."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = UPath(folder)

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(str(self.folder / f"{name}.lock"), "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class RedisLocks:
    """Locks in Redis, for shard state on an object store that several machines write.

    Leased (``lease_seconds``): a holder that dies frees the lock when the lease ends. A holder
    stalled past its lease loses it; that is why the lease is far above one shard's write.
    """

    def __init__(
        self, url: str, namespace: str, *, lease_seconds: int = 300, wait_seconds: int = 900
    ) -> None:
        from embedding_assets.stores.feature_store import connect

        self.client = connect(url)
        self.namespace = namespace
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        lock = self.client.lock(
            f"ea_lock:{self.namespace}:{name}",
            timeout=self.lease_seconds,
            blocking_timeout=self.wait_seconds,
        )
        if not lock.acquire():
            raise TimeoutError(f"shard lock {name} still held by another run after {self.wait_seconds}s")
        try:
            yield
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:  # the lease ran out: said loudly, the write is done
                raise RuntimeError(
                    f"shard lock {name} expired while held (over {self.lease_seconds}s); "
                    "another run may have merged at the same time: run the daily sweep"
                ) from None
