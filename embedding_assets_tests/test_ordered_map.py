import threading
import time

import pytest

from embedding_assets.lib.ordered_map import ordered_map


def test_results_come_in_order_whatever_finishes_first():
    def slow_first(i: int) -> int:
        time.sleep(0.05 if i % 3 == 0 else 0)
        return i * i

    assert list(ordered_map(slow_first, range(20), threads=3)) == [i * i for i in range(20)]
    assert list(ordered_map(slow_first, range(5), threads=1)) == [0, 1, 4, 9, 16]


def test_items_run_at_once_on_the_threads():
    barrier = threading.Barrier(2, timeout=5)  # breaks unless two items run together

    def meet(i: int) -> int:
        barrier.wait()
        return i

    assert list(ordered_map(meet, range(4), threads=2)) == [0, 1, 2, 3]


def test_at_most_threads_plus_one_items_are_started_ahead_of_the_caller():
    started: list[int] = []

    def record(i: int) -> int:
        started.append(i)
        return i

    results = ordered_map(record, range(100), threads=2)
    assert next(results) == 0
    time.sleep(0.1)
    assert len(started) <= 4  # the one consumed, and threads + 1 submitted after it at most
    results.close()  # stopping early cancels the rest
    assert len(started) <= 4


def test_an_error_reaches_the_caller_and_cancels_what_has_not_started():
    started: list[int] = []

    def fail_at_two(i: int) -> int:
        started.append(i)
        if i == 2:
            raise ValueError("shard 2")
        time.sleep(0.01)
        return i

    seen = []
    with pytest.raises(ValueError, match="shard 2"):
        for value in ordered_map(fail_at_two, range(50), threads=2):
            seen.append(value)
    assert seen == [0, 1]
    assert len(started) < 10
