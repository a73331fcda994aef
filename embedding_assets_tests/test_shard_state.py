"""The shard-state store: pinned to its shard count, and resharded without losing a row."""

import datetime as dt

import polars as pl
import pytest

from embedding_assets.lib.frames import SNAPSHOT_SCHEMA
from embedding_assets.lib.sharding import shard_key, shard_of
from embedding_assets.stores.shard_state import (
    ShardLayoutError,
    ShardStateStore,
    reshard,
    stored_shard_count,
)


def _snapshot(ids: list[str | None]) -> pl.DataFrame:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        {
            "doc_id": d,
            "source_id": str(i),
            "title": f"t{d}",
            "body": "b",
            "language": "en",
            "indexed_at": when,
            "modified_at": when,
            "notes": None,
        }
        for i, d in enumerate(ids)
    ]
    return pl.DataFrame(rows, schema=SNAPSHOT_SCHEMA)


def _fill(store: ShardStateStore, ids: list[str]) -> None:
    for s in range(store.num_shards):
        mine = [d for d in ids if shard_of(d, store.num_shards) == s]
        store.save("document_snapshots", shard_key(s, store.num_shards), _snapshot(mine))


def test_state_is_pinned_to_its_shard_count(tmp_path):
    store = ShardStateStore(tmp_path, 16)
    _fill(store, [f"doc-{i}" for i in range(100)])
    assert stored_shard_count(tmp_path) == 16
    ShardStateStore(tmp_path, 16)  # the same count opens
    with pytest.raises(ShardLayoutError, match=r"EA_NUM_SHARDS=16.*embedding-assets reshard --shards 32"):
        ShardStateStore(tmp_path, 32)


def test_state_written_before_the_pin_is_recognised(tmp_path):
    store = ShardStateStore(tmp_path, 16)
    _fill(store, [f"doc-{i}" for i in range(100)])
    (tmp_path / "_layout.json").unlink()  # as an earlier release left it
    with pytest.raises(ShardLayoutError, match="another shard count"):
        ShardStateStore(tmp_path, 8)  # shard-15 cannot belong to 8 shards
    with pytest.raises(ShardLayoutError):
        ShardStateStore(tmp_path, 128)  # keys of 128 shards are three digits wide
    assert ShardStateStore(tmp_path, 16).num_shards == 16
    assert stored_shard_count(tmp_path) == 16


def test_reshard_moves_every_row_to_its_new_shard(tmp_path):
    ids = [f"doc-{i}" for i in range(500)]
    _fill(ShardStateStore(tmp_path, 16), ids)
    # a row without a doc_id (reported, never embedded) stays too, in shard 0
    first = ShardStateStore(tmp_path, 16)
    key0 = shard_key(0, 16)
    first.save(
        "document_snapshots", key0, pl.concat([first.load("document_snapshots", key0), _snapshot([None])])
    )

    rows = reshard(tmp_path, 40)

    assert rows["document_snapshots"] == 501
    assert stored_shard_count(tmp_path) == 40
    store = ShardStateStore(tmp_path, 40)
    seen = []
    for s in range(40):
        frame = store.load("document_snapshots", shard_key(s, 40))
        if frame is None:
            continue
        ids_here = frame["doc_id"].drop_nulls().to_list()
        assert all(shard_of(d, 40) == s for d in ids_here)
        assert frame["doc_id"].to_list() == sorted(ids_here) + [None] * frame["doc_id"].null_count()
        seen += frame["doc_id"].to_list()
    assert sorted(d for d in seen if d) == sorted(ids) and seen.count(None) == 1
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.*"))  # nothing left beside it
