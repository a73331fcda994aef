"""Source documents as snapshot rows, and delta merges: lib/snapshot.py."""

import datetime as dt

import polars as pl

from embedding_assets.lib.frames import SNAPSHOT_SCHEMA
from embedding_assets.lib.snapshot import is_tombstone, merge_snapshot, snapshot_frame


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
