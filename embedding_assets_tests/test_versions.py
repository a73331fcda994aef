"""Versions side by side, switching readers, cleanup; writes that never go back in time."""

import shutil
import socket
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import redis

from embedding_assets.cli import main
from embedding_assets.lib import codec
from embedding_assets.lib.feature_store import FeatureStore
from embedding_assets_tests.runs import collection, load_sample, materialize

pytestmark = pytest.mark.servers


def _record(source_ms: int, content_hash: int, dimension: int = 8) -> bytes:
    [value] = codec.encode_records(
        np.zeros((1, dimension), np.int8),
        codec="int8",
        dimension=dimension,
        version_id=1,
        computed_at=1,
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
            urls.append("redis://127.0.0.1:6379/9")
    except OSError:
        pass
    return urls


def test_an_older_source_state_never_overwrites_a_newer_entry(redis_url):
    for url in _redis_servers(redis_url):
        client = redis.Redis.from_url(url)
        client.flushdb()
        store = FeatureStore(client)
        newer, older = _record(2_000, 2), _record(1_000, 1)
        assert store.write_if_not_older("v", ["a"], [newer]) == 1
        assert store.write_if_not_older("v", ["a", "b"], [older, older]) == 1  # only b
        assert store.read_one("v", "a") == newer
        assert store.write_if_not_older("v", ["a"], [_record(2_000, 3)]) == 1  # same state: last wins
        # deletes leave entries rewritten from a later state alone
        assert store.delete_if_not_newer("v", ["a", "b"], [1_500, 1_000]) == 1
        assert store.read_one("v", "a") and store.read_one("v", "b") is None
        assert [h.source_ms for h in store.read_headers("v", ["a"])] == [2_000]
        client.hset(*store.location("v", "junk"), b"not a record")
        assert store.read_headers("v", ["junk", "none"]) == [None, None]


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
            assert store.write_if_not_older(version, ids, values) == 300
            assert store.read_many(version, ids) == values
            assert store.read_one(version, "doc-7") == values[7]
            assert sorted(store.scan_doc_ids(version)) == sorted(ids)
            assert client.object("encoding", store.location(version, "doc-7")[0]).decode() == encoding
            assert 0 < store.entry_ttl(version, "doc-7") <= store.ttl_seconds
        # a version keeps the bucket count it was created with, whatever readers are configured with
        assert FeatureStore(client, buckets=64).read_many("tuned", ids) == values
        assert FeatureStore(client).drop_version("plain") == 300
        assert not list(store.scan_doc_ids("plain"))


@pytest.mark.slow
def test_new_version_is_backfilled_beside_then_activated_then_old_removed(pipeline_env, monkeypatch, capsys):
    docs = load_sample(pipeline_env, 24)
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    old = store.active_version()

    monkeypatch.setenv("EA_TITLE_REPEAT", "1")  # a chunking change: a new version
    assert materialize(["shard-00", "shard-01"]).success  # partly backfilled
    new = next(v for v in store.versions() if v != old)
    assert main(["activate", new]) == 1  # refused: coverage incomplete
    assert "not activated" in capsys.readouterr().out
    assert store.active_version() == old

    assert materialize().success
    assert main(["activate", new]) == 0
    assert store.active_version() == new
    assert main(["cleanup", new]) == 1  # the active version is never removed
    assert main(["cleanup", old]) == 0
    assert old not in store.versions()
    assert not list(store.scan_doc_ids(old))
    assert len(list(store.scan_doc_ids(new))) == len(docs)
    collection(pipeline_env)  # the source is untouched by all this
    assert main(["versions"]) == 0
    assert f"* {new}" in capsys.readouterr().out


def _postgres() -> dict[str, str] | None:
    import os

    if os.environ.get("DAGSTER_PG_HOST"):
        return {k: os.environ[k] for k in os.environ if k.startswith("DAGSTER_PG_")}
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5).close()
    except OSError:
        return None
    return {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": "postgres",
    }


def test_deployment_instance_config_runs_on_postgres(tmp_path, monkeypatch):
    pg = _postgres()
    if pg is None:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 and no DAGSTER_PG_HOST")
    for key, value in pg.items():
        monkeypatch.setenv(key, value)
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

        @dg.asset
        def probe() -> int:
            return 1

        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id) is not None
