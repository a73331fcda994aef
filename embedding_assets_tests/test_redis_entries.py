"""The entry store on real servers (valkey, and the machine's Redis 7.0 when there is one)."""

import socket

import numpy as np
import pytest
import redis

from embedding_assets.lib import codec
from embedding_assets.stores.feature_store import FeatureStore
from embedding_assets_tests.conftest import redis_test_db

pytestmark = pytest.mark.servers


def _record(source_ms: int, content_hash: int, dimension: int = 8, read_s: int = 1) -> bytes:
    [value] = codec.encode_records(
        np.zeros((1, dimension), np.int8),
        codec="int8",
        dimension=dimension,
        version_id=1,
        computed_at=read_s,
        content_hashes=np.array([content_hash], np.uint64),
        source_ms=np.array([source_ms], np.int64),
    )
    return value


def _redis_servers(redis_url: str) -> list[str]:
    """The test's server, and the machine's Redis 7.0 too when there is one."""
    urls = [redis_url]
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        if ":6379/" not in redis_url:
            urls.append(f"redis://127.0.0.1:6379/{redis_test_db()}")
    except OSError:
        pass
    return urls


def test_an_older_source_state_never_overwrites_a_newer_entry(redis_url):
    for url in _redis_servers(redis_url):
        client = redis.Redis.from_url(url)
        client.flushdb()
        store = FeatureStore(client)
        store.control.ensure_layout("v")
        newer, older = _record(2_000, 2), _record(1_000, 1)
        assert store.entries.write_if_not_older("v", ["a"], [newer]) == 1
        assert store.entries.write_if_not_older("v", ["a", "b"], [older, older]) == 1  # only b
        assert store.entries.read_one("v", "a") == newer
        assert store.entries.write_if_not_older("v", ["a"], [_record(2_000, 3)]) == 1  # same state: last wins
        # deletes leave entries rewritten from a later state alone
        assert store.entries.delete_if_not_newer("v", ["a", "b"], [1_500, 1_000]) == 1
        assert store.entries.read_one("v", "a") and store.entries.read_one("v", "b") is None
        assert [h.source_ms for h in store.entries.read_headers("v", ["a"])] == [2_000]
        # an entry written (computed_at 1) before the new value's document was read (at 2) is
        # replaced even by an earlier modified_at: the source went back in time
        earlier = _record(500, 9)
        assert store.entries.write_if_not_older("v", ["a"], [earlier], [1]) == 0  # same second: refused
        assert store.entries.write_if_not_older("v", ["a"], [earlier], [2]) == 1
        assert store.entries.read_one("v", "a") == earlier
        client.hset(*store.entries.location("v", "junk"), b"not a record")
        assert store.entries.read_headers("v", ["junk", "none"]) == [None, None]


def test_a_deletion_is_ordered_by_when_it_was_seen_and_outlives_the_entry(redis_url):
    for url in _redis_servers(redis_url):
        client = redis.Redis.from_url(url)
        client.flushdb()
        entries = FeatureStore(client).entries
        FeatureStore(client).control.ensure_layout("v")
        # y read at 100 and written; seen deleted at 120: gone, and a tombstone stays
        assert entries.write_if_not_older("v", ["y"], [_record(1, 1, read_s=100)], [100]) == 1
        assert entries.delete_if_not_newer("v", ["y", "never"], [1, 0], seen_s=120) == 1
        assert entries.read_one("v", "y") is None
        assert entries.deletions_seen("v", ["y", "never", "other"]) == [120, 120, None]
        # a run that read y before the deletion writes late: refused, however new its date
        assert entries.write_if_not_older("v", ["y"], [_record(9_999, 2, read_s=110)], [110]) == 0
        assert entries.write_if_not_older("v", ["y"], [_record(9_999, 2, read_s=120)], [120]) == 0
        # a read after the deletion (re-created) is written, and the tombstone goes
        assert entries.write_if_not_older("v", ["y"], [_record(5, 3, read_s=130)], [130]) == 1
        assert entries.deletions_seen("v", ["y"]) == [None]
        # an entry read after the deletion was seen is not deleted by it
        assert entries.delete_if_not_newer("v", ["y"], [5], seen_s=125) == 0
        assert entries.read_one("v", "y") is not None and entries.deletions_seen("v", ["y"]) == [None]
        # tombstones are not entries, and the old ones are forgotten by a scan that says so
        assert entries.delete_if_not_newer("v", ["x"], [0], seen_s=50) == 0
        assert sorted(entries.scan_ids("v")) == ["y"]
        assert entries.deletions_seen("v", ["x", "never"]) == [50, 120]
        assert sorted(entries.scan_ids("v", forget_deletions_before=100)) == ["y"]
        assert entries.deletions_seen("v", ["x", "never"]) == [None, 120]
        assert entries.drop("v") == 1


def test_bucketed_entries_read_the_same_compact_or_not_on_both_servers(redis_url):
    """Buckets stay listpacks where the server allows it; an untuned server works the same."""
    ids = [f"doc-{i}" for i in range(300)]
    values = [_record(1_000 + i, i, dimension=384) for i in range(300)]
    for url in _redis_servers(redis_url):
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.config_set("hash-max-listpack-value", 64)  # the servers' default
        for tune, encoding, version in ((False, "hashtable", "plain"), (True, "listpack", "tuned")):
            store = FeatureStore(client, buckets=8)
            assert store.compact_encoding(tune=tune) == encoding
            assert store.control.ensure_layout(version) == 8
            assert store.entries.write_if_not_older(version, ids, values) == 300
            assert store.entries.read(version, ids) == values
            assert store.entries.read_one(version, "doc-7") == values[7]
            assert sorted(store.entries.scan_ids(version)) == sorted(ids)
            assert client.object("encoding", store.entries.location(version, "doc-7")[0]).decode() == encoding
            assert 0 < store.entries.entry_ttl(version, "doc-7") <= store.entries.ttl_seconds
        # a version keeps the bucket count it was created with, whatever readers are configured with
        assert FeatureStore(client, buckets=64).entries.read("tuned", ids) == values
        assert FeatureStore(client).drop_version("plain") == 300
        assert not list(store.entries.scan_ids("plain"))


def test_clearing_letters_by_kind_removes_only_those_whichever_side_is_read(redis_url):
    """A run clears every document it chunked cleanly: with fewer letters than ids the letters
    are read, with more the ids are; either way only the named kinds of the named ids go."""
    from embedding_assets.stores.dead_letters import FAILED, REJECTED, WARNING

    store = FeatureStore.from_url(redis_url)
    letters = store.control.dead_letters("v-letters")
    assert letters.clear([f"d{i}" for i in range(50)], kinds=[REJECTED, WARNING]) == 0  # none stored
    letters.record([("d1", REJECTED, "no text"), ("d2", WARNING, "repaired"), ("d3", FAILED, "model")])
    letters.record([("x1", REJECTED, "no text"), ("x2", WARNING, "repaired")])
    # fewer letters (5) than ids (50): the letters are read
    assert letters.clear([f"d{i}" for i in range(50)], kinds=[REJECTED, WARNING]) == 2
    assert sorted((d.doc_id, d.kind) for d in letters.all()) == [
        ("d3", FAILED),
        ("x1", REJECTED),
        ("x2", WARNING),
    ]
    # more letters (3) than ids (2): the ids are read
    assert letters.clear(["d3", "x1"], kinds=[REJECTED, WARNING]) == 1
    assert sorted(d.doc_id for d in letters.all()) == ["d3", "x2"]
    assert letters.clear(["d3", "x2", "nope"]) == 2  # no kinds: whatever they are
    assert letters.all() == []
