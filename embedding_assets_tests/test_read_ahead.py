import threading

import pytest

from embedding_assets.sources.read_ahead import pages_ahead, read_ahead


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

    before = set(threading.enumerate())
    items = read_ahead(endless(), batch=5, pages=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    (reader,) = [t for t in threading.enumerate() if t not in before and t.name == "read-ahead"]
    items.close()
    assert closed.wait(5)
    reader.join(5)
    assert not reader.is_alive()


def test_the_thread_holds_two_of_the_servers_replies_ahead_and_never_fewer_than_four_batches():
    # SecantusDB's scans reply 10,000 documents at a time (sources/mongo.py); mongod's, 1,000
    assert pages_ahead(10_000) * 1000 >= 2 * 10_000
    assert pages_ahead(10_000, batch=500) * 500 >= 2 * 10_000
    assert pages_ahead(1000) == pages_ahead(10) == 4
