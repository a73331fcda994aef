import threading
import time

import pytest

from embedding_assets.sources.read_ahead import read_ahead


def test_items_arrive_in_order_whatever_the_page_size():
    assert list(read_ahead(iter(range(1003)), batch=10)) == list(range(1003))
    assert list(read_ahead(iter([]))) == []


def test_an_error_is_raised_after_the_items_read_before_it():
    def failing():
        yield from range(25)
        raise ConnectionError("server gone")

    seen = []
    with pytest.raises(ConnectionError, match="server gone"):
        for item in read_ahead(failing(), batch=10):
            seen.append(item)
    assert seen == list(range(25))


def test_a_caller_that_stops_early_stops_the_reader_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    before = threading.active_count()
    items = read_ahead(endless(), batch=5, pages=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.wait(5)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
