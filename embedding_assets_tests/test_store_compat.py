"""A store written by the release before the layout change (fixtures/store_v1) is read, and kept
current, by this one without re-embedding anything."""

import base64
import datetime as dt
import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import redis
from bson import json_util

from embedding_assets.client import EmbeddingClient
from embedding_assets.defs import sensors
from embedding_assets.defs.resources import build_resources
from embedding_assets.defs.sensors import document_changes_sensor
from embedding_assets.dev.harness import (
    Daemon,
    check_results,
    collection,
    ground_truth,
    materialize,
    metadata,
    store_state,
)
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]
FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"


def _settled() -> dt.datetime:
    """A write time the change sensor has settled past (it stays SETTLE_SECONDS behind now)."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=sensors.SETTLE_SECONDS + 5)


def _restore(env: dict[str, str]) -> list[dict]:
    docs = json_util.loads((FIXTURE / "documents.json").read_text())
    collection(env).insert_many([dict(d) for d in docs])
    client = redis.Redis.from_url(env["REDIS_URL"])
    for entry in json.loads((FIXTURE / "redis.json").read_text()):
        if entry["type"] == "hash":
            mapping = {base64.b64decode(f): base64.b64decode(v) for f, v in entry["fields"].items()}
            client.hset(entry["key"], mapping=mapping)
        else:
            client.set(entry["key"], base64.b64decode(entry["value"]))
    shutil.copytree(FIXTURE / "parquet", env["EA_PARQUET_DIR"])
    return docs


def test_a_store_written_before_is_read_and_kept_current_without_re_embedding(pipeline_env, monkeypatch):
    monkeypatch.setenv("EA_PRECISION", "fp32")  # as the fixture was made: the tag must not depend on the CPU
    monkeypatch.setenv("EA_RUNTIME", "torch")  # every release before runtimes ran torch (docs/operations.md)
    monkeypatch.setenv("EA_MODEL", "all-MiniLM-L6-v2")  # the default of the release that wrote it
    # and its chunking rule, as docs/operations.md tells a deployment that keeps its old version
    monkeypatch.setenv("EA_POOLING", "mean")
    monkeypatch.setenv("EA_WINDOW_TOKENS", "0")
    monkeypatch.setenv("EA_OVERLAP_TOKENS", "32")
    docs = _restore(pipeline_env)
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    [tag] = store.control.versions()
    assert store.control.active_version() == tag

    # read: every entry the old release wrote decodes through today's client
    client = EmbeddingClient.from_url(pipeline_env["REDIS_URL"])
    with_text = sorted(d["doc_id"] for d in docs if d["doc_id"] != "odd-empty")
    before = client.get_many(with_text)
    assert all(e is not None for e in before) and len(before) == 41

    # the version this release computes (from the model's files) is the stored one
    with dg.build_resources({"model": build_resources()["embedding_model"]}) as resources:
        assert resources.model.spec().tag == tag

    # a full run over the old shard state: nothing re-chunked or re-embedded, entries kept
    result = materialize()
    assert metadata(result, "chunked_text")["reused"] == 41
    assert metadata(result, "document_vectors")["embedded"] == 0
    entries = metadata(result, "feature_store_entries")
    assert entries["version"] == tag and entries["failures"] == 0
    assert entries.get("entries_stale", 0) == 0 and entries.get("entries_missing", 0) == 0
    assert all(e.passed for e in check_results(result).values())
    after = client.get_many(with_text)
    for old, new in zip(before, after, strict=True):
        assert new.content_hash == old.content_hash
        assert np.array_equal(new.vector, old.vector)  # the same codes: restamped at most

    # kept current: an edit reaches the store through the change sensor, nothing else moves
    daemon = Daemon()
    daemon.tick(document_changes_sensor)  # the cursor starts at the newest document
    coll = collection(pipeline_env)
    coll.update_one(
        {"doc_id": "doc-000003"},
        {"$set": {"body": "Queries return faster with an index.", "modified_at": _settled()}},
    )
    assert daemon.sync(document_changes_sensor) == 1
    assert metadata(daemon.results[-1], "document_vectors")["embedded"] == 1
    assert store_state(store, tag) == ground_truth(coll, store.control.versions()[tag])
    assert client.get("doc-000003").content_hash != before[with_text.index("doc-000003")].content_hash


def test_upgrading_that_store_to_the_multilingual_default_is_a_blue_green_switch(
    pipeline_env, monkeypatch, capsys
):
    """The new default is a new version written beside the old one: readers stay on the old one
    until `activate`, and a query of one version is never scored against the other's entries."""
    from embedding_assets.cli import main
    from embedding_assets.client import VersionMismatch

    monkeypatch.setenv("EA_PRECISION", "fp32")
    docs = _restore(pipeline_env)
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    [old] = store.control.versions()
    client = EmbeddingClient.from_url(pipeline_env["REDIS_URL"], refresh_seconds=0)
    with_text = sorted(d["doc_id"] for d in docs if d["doc_id"] != "odd-empty")
    before = client.get_many(with_text)

    monkeypatch.delenv("EA_MODEL", raising=False)  # the default: multilingual-e5-small
    result = materialize()
    assert result.success
    new = str(metadata(result, "feature_store_entries")["version"])
    assert new.startswith("multilingual-e5-small-") and new != old
    assert store.control.active_version() == old  # written beside, not switched
    assert [e.vector.tobytes() for e in client.get_many(with_text)] == [e.vector.tobytes() for e in before]
    assert metadata(result, "document_vectors")["embedded"] == 41  # every document, for the new model

    query = EmbeddingClient.from_url(pipeline_env["REDIS_URL"], new).embed_query("an index")
    with pytest.raises(VersionMismatch):  # the old version's reader refuses the new model's query
        client.rerank(query, with_text)

    assert main(["activate", new]) == 0, capsys.readouterr().out
    assert client.rerank(query, with_text).missing == []  # now the same version: scored
    assert store_state(store, old) and store_state(store, new)  # nothing lost until cleanup
