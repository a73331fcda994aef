"""Source documents as snapshot rows: lib/snapshot.py."""

import datetime as dt

from embedding_assets.lib.snapshot import is_tombstone, snapshot_frame


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
