import datetime as dt

import polars as pl

from embedding_assets.lib.change_tracking import ChangeCursor, group_by_shard, run_key
from embedding_assets.lib.codec import RecordHeader
from embedding_assets.lib.pipeline import SNAPSHOT_SCHEMA, is_tombstone, merge_snapshot, snapshot_frame
from embedding_assets.lib.sharding import shard_of
from embedding_assets.lib.staleness import NEEDS_WRITE, EntryState, classify

NOW = 1_800_000_000


def header(**kw):
    base = dict(
        codec="int8", dimension=4, version_id=7, computed_at=NOW - 10, content_hash=42, source_ms=1000
    )
    base.update(kw)
    return RecordHeader(**base)


def state(h, **kw):
    args = dict(version_id=7, content_hash=42, source_ms=1000, now=NOW, max_age_seconds=3600)
    args.update(kw)
    return classify(h, **args)


def test_staleness_rules():
    assert state(None) is EntryState.MISSING
    assert state(header()) is EntryState.CURRENT
    assert state(header(content_hash=41)) is EntryState.STALE
    assert state(header(version_id=8)) is EntryState.STALE
    assert state(header(), source_ms=2000) is EntryState.SOURCE_NEWER  # metadata-only edit
    assert state(header(computed_at=NOW - 7200)) is EntryState.OLD
    assert state(header(source_ms=3000), source_ms=2000) is EntryState.NEWER_THAN_SOURCE
    assert state(header(source_ms=3000, content_hash=1), source_ms=2000) is EntryState.NEWER_THAN_SOURCE
    assert {EntryState.MISSING, EntryState.STALE, EntryState.SOURCE_NEWER, EntryState.OLD} == NEEDS_WRITE


def test_cursor_orders_ties_by_doc_id_and_round_trips():
    t = dt.datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)
    a, b = ChangeCursor(t, "a"), ChangeCursor(t, "b")
    assert a < b < ChangeCursor(t + dt.timedelta(milliseconds=1), "0")
    assert ChangeCursor.parse(b.dump()) == b
    assert ChangeCursor.parse(None) is None
    naive = ChangeCursor.of({"modified_at": t.replace(tzinfo=None), "doc_id": 5})
    assert naive == ChangeCursor(t, "5")


def test_grouping_and_run_keys_are_deterministic():
    ids = [f"d{i}" for i in range(50)] + ["d1", "d2"]
    groups = group_by_shard(ids, 16)
    assert sorted(d for g in groups.values() for d in g) == sorted(set(ids))
    assert all(shard_of(d, 16) == s for s, g in groups.items() for d in g)
    assert run_key("changes", 3, "pos", ["a", "b"]) == run_key("changes", 3, "pos", ["a", "b"])
    assert run_key("changes", 3, "pos", ["a", "b"]) != run_key("changes", 3, "pos2", ["a", "b"])


def _docs(*rows):
    return snapshot_frame(rows)


def test_tombstones_and_duplicates_in_snapshots():
    t1, t2 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert is_tombstone({"is_deleted": True}) and is_tombstone({"deleted_at": t1})
    assert not is_tombstone({"is_deleted": False, "deleted_at": None})
    frame = _docs(
        {"_id": 1, "doc_id": "a", "body": "old", "modified_at": t1},
        {"_id": 2, "doc_id": "a", "body": "new", "modified_at": t2},
        {"_id": 3, "doc_id": "b", "body": "x", "is_deleted": True},
        {"_id": 4, "doc_id": "c", "body": "y", "deleted_at": t1},
        {"_id": 5, "body": "no id"},
    )
    assert frame["doc_id"].to_list() == ["a", None]
    assert frame["body"].to_list() == ["new", "no id"]


def test_merge_upserts_and_deletes_only_requested_ids():
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    previous = _docs(*({"_id": i, "doc_id": d, "body": d, "modified_at": t} for i, d in enumerate("abcd")))
    fetched = _docs(
        {"_id": 9, "doc_id": "b", "body": "B2", "modified_at": t}, {"_id": 10, "doc_id": "e", "body": "E"}
    )
    state, upserted, deleted = merge_snapshot(previous, fetched, ["b", "c", "e"])
    assert state["doc_id"].to_list() == ["a", "b", "d", "e"]
    assert state.filter(pl.col("doc_id") == "b")["body"].item() == "B2"
    assert (upserted, deleted) == (2, 1)
    fresh, upserted, deleted = merge_snapshot(None, fetched, ["e"])
    assert fresh["doc_id"].to_list() == ["e"] and (upserted, deleted) == (1, 0)
    assert fresh.schema == SNAPSHOT_SCHEMA
