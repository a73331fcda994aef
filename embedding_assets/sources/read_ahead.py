"""A scan read ahead by a thread: the server sends the next pages while the caller works on this one.

Without it a scan alternates: the driver asks for a page and waits, then the caller turns it into
rows while the server waits. With one server process and one step process on separate cores, the
two overlap (benchmarks.run: the snapshot step of 100k documents on SecantusDB).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
JOIN_SECONDS = 30.0


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def pages_ahead(server_page: int, batch: int = 1000) -> int:
    """Batches to hold ahead of the caller for a server that sends ``server_page`` documents a
    reply: two and two-fifths replies, so that the thread asks for the next reply as soon as one
    arrives, while the caller still works through the last. Held to four batches, the thread asked
    for SecantusDB's next 10,000 only once the caller had taken 6,000, and the server then built it
    while the caller waited: 100k documents read in 2.89 and 3.14 s against 2.59 and 2.65 s with 24
    batches (the means of two sets of alternating rounds), 2.73 s with 12 (docs/benchmarks.md).
    Never fewer than four."""
    return max(4, server_page * 12 // (5 * batch))


def read_ahead(items: Iterator[T], batch: int = 1000, pages: int = 4) -> Iterator[T]:
    """``items``, consumed by a thread up to ``pages`` batches of ``batch`` ahead of the caller.

    The thread alone iterates ``items`` (a driver cursor stays on one thread); its errors are
    raised here, in order, after the items read before them. A caller that stops early stops it.
    """
    pending: queue.Queue = queue.Queue(maxsize=pages)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        page: list[T] = []
        try:
            for item in items:
                page.append(item)
                if len(page) >= batch:
                    if not put(page):
                        return
                    page = []
            if put(page):
                put(_DONE)
        except BaseException as err:  # handed to the caller's thread
            if put(page):  # what was read before the error is the caller's
                put(_Raised(err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            got = pending.get()
            if got is _DONE:
                return
            if isinstance(got, _Raised):
                raise got.error
            yield from got
    finally:
        stop.set()
        thread.join(JOIN_SECONDS)
