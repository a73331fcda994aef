"""Sensor cursors, grouping and run keys: lib/change_tracking.py."""

import datetime as dt
import itertools

from bson import ObjectId

from embedding_assets.lib.change_tracking import ChangeCursor, group_by_shard, run_key, shard_runs
from embedding_assets.lib.sharding import shard_of


def test_cursor_orders_ties_by_doc_id_and_round_trips():
    t = dt.datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)
    a, b = ChangeCursor(t, "a"), ChangeCursor(t, "b")
    assert a < b < ChangeCursor(t + dt.timedelta(milliseconds=1), "0")
    assert ChangeCursor.parse(b.dump()) == b
    assert ChangeCursor.parse(None) is None
    naive = ChangeCursor.of({"modified_at": t.replace(tzinfo=None), "doc_id": 5})
    assert naive == ChangeCursor(t, 5)  # naive times are UTC; the id keeps its BSON type
    oid = ChangeCursor(t, ObjectId("65a1b2c3d4e5f60718293a4b"))
    assert ChangeCursor.parse(oid.dump()) == oid and ChangeCursor.parse(naive.dump()).doc_id == 5
    legacy = '{"modified_at": "2026-01-01T00:00:00+00:00", "doc_id": "doc-7"}'  # as earlier releases wrote it
    assert ChangeCursor.parse(legacy) == ChangeCursor(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "doc-7")


def test_grouping_and_run_keys_are_deterministic():
    ids = [f"d{i}" for i in range(50)] + ["d1", "d2"]
    groups = group_by_shard(ids, 16)
    assert sorted(d for g in groups.values() for d in g) == sorted(set(ids))
    assert all(shard_of(d, 16) == s for s, g in groups.items() for d in g)
    assert run_key("changes", [3], "pos", ["a", "b"]) == run_key("changes", [3], "pos", ["a", "b"])
    assert run_key("changes", [3], "pos", ["a", "b"]) != run_key("changes", [3], "pos2", ["a", "b"])


def test_runs_cover_contiguous_changed_shards_and_never_an_unchanged_one():
    assert shard_runs([0, 13, 15]) == [[0], [13], [15]]
    assert shard_runs([5, 3, 4, 9, 10]) == [[3, 4, 5], [9, 10]]
    assert shard_runs([0, 2, 4, 5, 9, 14]) == [[0], [2], [4, 5], [9], [14]]
    assert shard_runs([]) == []
    for shards in ([1], list(range(16)), [0, 15], [0, 3, 6, 9, 12, 15], [1, 1, 2]):
        runs = shard_runs(shards)
        assert sorted(s for r in runs for s in r) == sorted(set(shards))
        assert all(r == list(range(r[0], r[-1] + 1)) for r in runs)  # contiguous: nothing else
        assert all(a[-1] + 1 < b[0] for a, b in itertools.pairwise(runs))  # as few runs as that allows


def test_edits_inside_the_settle_window_go_at_once_and_never_twice():
    from embedding_assets.lib.change_tracking import early_changes

    t = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    a, b = {"doc_id": "a", "modified_at": t}, {"doc_id": 7, "modified_at": t}
    # tick 1: both are visible but not settled: requested now, remembered
    todo, early = early_changes({}, [], [a, b], limit=10)
    assert todo == [a, b] and early == {"a": t.isoformat(), "7": t.isoformat()}
    # tick 2: the cursor reaches them: not requested again; a late commit dated earlier is
    late = {"doc_id": "late", "modified_at": t - dt.timedelta(seconds=1)}
    todo, early = early_changes(early, [late, a, b], [], limit=10)
    assert todo == [late] and early == {}
    # an edit of a remembered document (a later modified_at) is a new change
    again = {"doc_id": "a", "modified_at": t + dt.timedelta(seconds=2)}
    todo, _ = early_changes({"a": t.isoformat()}, [again], [], limit=10)
    assert todo == [again]
    # still unsettled at the next tick (ticks closer than the settle time): not requested twice
    todo, early = early_changes({"a": t.isoformat()}, [], [a], limit=10)
    assert todo == [] and early == {"a": t.isoformat()}
    # a bulk load inside the window waits for the cursor, as before
    many = [{"doc_id": f"d{i}", "modified_at": t} for i in range(10)]
    todo, early = early_changes({}, [a], many, limit=10)
    assert todo == [a] and early == {}


def test_the_cursor_keeps_what_it_requested_early():
    t = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
    cursor = ChangeCursor(t, "doc-1", "f00", {"doc-2": t.isoformat()})
    assert ChangeCursor.parse(cursor.dump()).early == {"doc-2": t.isoformat()}
    assert "early" not in ChangeCursor(t, "doc-1").dump()  # cursors stay as they were without it
