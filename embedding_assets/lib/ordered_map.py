"""``fn`` over items by a few threads, results in the items' order, a bounded number ahead.

For steps whose shards are independent and whose time is split between Python and a server
(or a native library that releases the GIL): while one thread waits, another computes. At most
``threads + 1`` items are in flight or done and not yet consumed, so memory stays that of a few
shards; an error, or a caller that stops early, cancels the items not yet started.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    if threads <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(threads)
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)  # what already runs finishes: no thread outlives the step
