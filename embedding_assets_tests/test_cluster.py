"""The feature store on a real Redis Cluster: three Valkey masters formed by the tests
(dev/cluster.py), the whole pipeline, a sensor delta, the client and the store audit on it."""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
import pytest
import redis
from redis.crc import key_slot

from embedding_assets.client import EmbeddingClient
from embedding_assets.defs.sensors import delta_run_requests
from embedding_assets.dev.cluster import ValkeyCluster
from embedding_assets.dev.harness import audit, check_results, collection, execute, load_sample, materialize
from embedding_assets.stores.feature_store import FeatureStore, connect
from embedding_assets.stores.redis_entries import SLOT_GROUPS, is_cluster

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with ValkeyCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def cluster_env(
    pipeline_env: dict[str, str], cluster: ValkeyCluster, monkeypatch: pytest.MonkeyPatch, static_dir: str
):
    # the store's layout on a cluster is what is tested, not the vectors: the static tier
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    client = connect(cluster.url)
    client.flushall()  # every master
    client.close()
    monkeypatch.setenv("REDIS_URL", cluster.url)
    return {**pipeline_env, "REDIS_URL": cluster.url}


def _masters(client: redis.RedisCluster) -> list[redis.Redis]:
    return [client.get_redis_connection(node) for node in client.get_primaries()]


def test_connect_finds_the_cluster_from_any_node(cluster):
    for port in cluster.ports:
        client = connect(f"redis://127.0.0.1:{port}")
        assert is_cluster(client)
        assert len(client.get_primaries()) == 3
        client.close()


def test_the_pipeline_on_a_cluster_keeps_the_store_equal_to_the_collection(cluster_env, cluster, measure):
    docs = load_sample(cluster_env, 240)
    assert materialize().success
    coll = collection(cluster_env)
    store = FeatureStore.from_url(cluster.url)
    assert is_cluster(store.client)
    version = store.control.active_version()
    assert measure(coll, store, version, "backfill on 3 masters").none

    # entry keys carry the {version:group} hash tag and are spread over every master
    pattern = re.compile(r"^doc_emb:\{" + re.escape(version) + r":(\d+)\}:b:(\d+)$")
    per_master = []
    for master in _masters(store.client):
        keys = [k.decode() for k in master.scan_iter(match="doc_emb:*", count=1000)]
        per_master.append(len(keys))
        for key in keys:
            found = pattern.match(key)
            assert found, key
            assert int(found.group(2)) % SLOT_GROUPS == int(found.group(1))
        # and every master was tuned for compact buckets
        assert int(master.config_get("hash-max-listpack-value")["hash-max-listpack-value"]) >= 1024
    assert all(n > 0 for n in per_master), per_master

    # a sensor delta: an edit, a deletion, an insert, over several shards (a run per range)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
    coll.update_one(
        {"doc_id": "doc-000007"}, {"$set": {"body": "Edited on the cluster.", "modified_at": now}}
    )
    coll.delete_one({"doc_id": "doc-000011"})
    coll.insert_one({"doc_id": "cluster-new", "title": "New", "body": "Inserted.", "modified_at": now})
    instance = dg.DagsterInstance.ephemeral()
    requests = delta_run_requests("changes", "cluster", ["doc-000007", "doc-000011", "cluster-new"])
    for request in requests:
        execute(request, instance)
    assert measure(coll, store, version, "delta on 3 masters").none

    # services read through the cluster
    client = EmbeddingClient.from_url(cluster.url)
    wanted = [d["doc_id"] for d in docs[:50] if d["doc_id"] != "doc-000011"]
    got = client.get_many(wanted)
    assert all(e is not None and e.doc_id == d for e, d in zip(got, wanted, strict=True))
    assert client.get("doc-000011") is None
    assert client.get("cluster-new") is not None

    # the store audit reads the cluster too, and finds it healthy
    evaluations = check_results(audit())
    assert evaluations and all(e.passed for e in evaluations.values()), {
        k: e.description for k, e in evaluations.items() if not e.passed
    }


def test_every_script_call_touches_one_slot(cluster_env, cluster):
    """Writes and deletions of many entries at once: no CROSSSLOT from the server, the keys of
    each call share a slot, and masters that lost their scripts get them again."""
    load_sample(cluster_env, 64)
    assert materialize().success
    store = FeatureStore.from_url(cluster.url)
    entries = store.entries
    keys = entries._keys(store.control.active_version(), [f"doc-{i:06d}" for i in range(64)])
    calls = entries._calls(keys)
    assert sum(len(c) for c in calls) == len(keys)
    for call in calls:
        assert len({key_slot(keys[i].encode()) for i in call}) == 1
    version = store.control.active_version()
    ids = [f"doc-{i:06d}" for i in range(64)]
    headers = entries.read_headers(version, ids)
    assert all(h is not None for h in headers)
    source_ms = [h.source_ms for h in headers]
    assert entries.delete_if_not_newer(version, ids[:32], source_ms[:32]) == 32
    for master in _masters(store.client):  # a restarted master has no scripts
        master.script_flush()
    assert entries.delete_if_not_newer(version, ids[32:], source_ms[32:]) == 32
    assert entries.read(version, ids) == [None] * 64
