"""The shard-state store: pinned to its shard count, and resharded without losing a row."""

import datetime as dt
import threading

import polars as pl
import pytest

from embedding_assets.lib.frames import SNAPSHOT_SCHEMA
from embedding_assets.lib.sharding import shard_key, shard_of
from embedding_assets.stores.locks import RedisLocks
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

    # deletions seen, and the control keys' copies, move too
    home = shard_key(shard_of("doc-0", 16), 16)
    first.save_snapshot(home, _snapshot([]), pl.DataFrame({"doc_id": ["doc-0"]}).pipe(_tomb, 1))
    first.save_version_copy("v1", '{"buckets": 7}')

    rows = reshard(tmp_path, 40)

    assert rows["document_snapshots"] == 500  # doc-0 was deleted
    moved = ShardStateStore(tmp_path, 40)
    deleted = moved.load_deleted("document_snapshots", shard_key(shard_of("doc-0", 40), 40))
    assert deleted["doc_id"].to_list() == ["doc-0"]
    assert moved.load_version_copy("v1") == '{"buckets": 7}'
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
    assert sorted(d for d in seen if d) == sorted(ids[1:]) and seen.count(None) == 1
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.*"))  # nothing left beside it


def _read_at(frame: pl.DataFrame, second: int) -> pl.DataFrame:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=second)
    return frame.with_columns(pl.lit(when, dtype=SNAPSHOT_SCHEMA["read_at"]).alias("read_at"))


def _locks(kind: str, request: pytest.FixtureRequest, tmp_path) -> object:
    if kind == "file":
        return None  # the default for a local folder
    return RedisLocks(request.getfixturevalue("redis_url"), namespace=str(tmp_path))


@pytest.mark.parametrize("kind", ["file", pytest.param("redis", marks=pytest.mark.servers)])
def test_concurrent_writers_of_one_shard_lose_nothing(tmp_path, kind, request):
    """Eight writers, each merging its own documents into one shard at once: the per-shard lock
    makes each merge start from the last write, so every document stays."""
    locks = _locks(kind, request, tmp_path)
    store = ShardStateStore(tmp_path, 1, locks)
    key = shard_key(0, 1)

    def writer(w: int) -> None:
        mine = ShardStateStore(tmp_path, 1, locks)  # a run of its own
        for i in range(10):
            mine.save_snapshot(key, _read_at(_snapshot([f"w{w}-{i}"]), w * 100 + i))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.load("document_snapshots", key)["doc_id"].n_unique() == 80


def test_a_derived_shard_written_by_another_run_meanwhile_is_merged(tmp_path):
    store = ShardStateStore(tmp_path, 1)
    key = shard_key(0, 1)
    store.save_snapshot(key, _read_at(_snapshot(["a", "b"]), 10))
    chunks = ShardStateStore(tmp_path, 1)
    late = ShardStateStore(tmp_path, 1)

    def derived(ids: list[str], second: int, tag: str) -> pl.DataFrame:
        frame = _read_at(_snapshot(ids), second).select("doc_id", "modified_at", "read_at")
        return frame.with_columns(pl.lit(tag).alias("what"))

    assert late.load("chunked_text", key) is None  # loads before the snapshot changes
    store.save_snapshot(key, _read_at(_snapshot(["a", "c"]), 20))  # a delta: c in, a newer
    store.save_snapshot(key, _read_at(_snapshot([]), 20), pl.DataFrame({"doc_id": ["b"]}).pipe(_tomb, 20))
    assert chunks.load("chunked_text", key) is None
    chunks.save_derived("chunked_text", key, derived(["a", "c"], 20, "current"))
    late.save_derived("chunked_text", key, derived(["a", "b"], 10, "stale"))  # computed before
    stored = store.load("chunked_text", key)
    assert dict(zip(stored["doc_id"], stored["what"], strict=True)) == {"a": "current", "c": "current"}


def _tomb(frame: pl.DataFrame, second: int) -> pl.DataFrame:
    return _read_at(frame, second).select("doc_id", "read_at")


def test_find_never_reads_a_shard_torn_by_a_write_renamed_in_meanwhile(tmp_path):
    """The deletion sensor looks up doc_ids while runs rewrite the same shards (a tick of the
    soak failed with "parquet: File out of specification"): each file is read from one open
    handle, so a rename between its footer and its pages cannot mix two writes."""
    store = ShardStateStore(tmp_path, 16)
    key = shard_key(0, 16)

    def frame(n: int) -> pl.DataFrame:
        return pl.DataFrame({"doc_id": [f"d{i}" for i in range(n)], "source_id": [f"s{i}" for i in range(n)]})

    store.save("document_snapshots", key, frame(2000))
    stop, errors = threading.Event(), []

    def rewrite() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            store.save("document_snapshots", key, frame(1000 + (n % 7) * 300))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(300):
            try:
                found = store.find("document_snapshots", "source_id", ["s1", "s999"], ["source_id", "doc_id"])
                assert sorted(found["doc_id"].to_list()) == ["d1", "d999"]
            except BaseException as err:  # polars panics too: collected, named below
                errors.append(repr(err))
    finally:
        stop.set()
        writer.join()
    assert errors == []


def test_a_scan_routed_through_the_spool_equals_one_held_whole(tmp_path):
    """Every shard's rows, once each, with the rows made 20 documents at a time and spilled to
    disk many times over; nothing left on disk after the scan."""
    from embedding_assets.lib.snapshot import snapshot_shards
    from embedding_assets.stores.shard_state import ShardSpool

    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    docs = [
        {
            "_id": i,
            "doc_id": f"d{i % 300}",
            "title": f"t{i}",
            "body": "b",
            "modified_at": when + dt.timedelta(seconds=i),
        }
        for i in range(1000)  # 300 doc_ids, most of them read three or four times
    ]
    routed = [(shard_of(d["doc_id"], 4), d) for d in docs]
    state = ShardStateStore(tmp_path / "parquet", 4)
    spool = ShardSpool(state, "document_snapshots")
    added: list[int] = []
    spill = spool.add
    spool.add = lambda shard, frame: (added.append(frame.height), spill(shard, frame))[1]
    spooled = dict(snapshot_shards(iter(routed), range(4), spool, spill_docs=70, batch=20))
    assert sum(added) == 960 and len(added) > 12, "every 80 documents (4 batches) to disk, the last 40 kept"
    whole = dict(snapshot_shards(iter(routed), range(4), None))
    spilled = list(spool.folder.rglob("*.parquet")) if spool.folder.exists() else []
    assert not spilled, "taken shards leave nothing on disk"
    for shard in range(4):
        assert spooled[shard].equals(whole[shard])
        assert spooled[shard]["title"].to_list() == [
            f"t{i}"
            for i in sorted(
                {d["doc_id"]: i for i, (s, d) in enumerate(routed) if s == shard}.values(),
                key=lambda i: docs[i]["doc_id"],
            )
        ], "of each doc_id's copies, the last modified"
    spool.clear()
