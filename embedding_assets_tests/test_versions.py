"""Versions side by side, switching readers, cleanup."""

import time

import pytest

from embedding_assets.cli import main
from embedding_assets.client import EmbeddingClient
from embedding_assets.dev.harness import collection, load_sample, materialize
from embedding_assets.stores.control_plane import ControlPlaneLost
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = pytest.mark.servers


@pytest.mark.slow
def test_new_version_is_backfilled_beside_then_activated_then_old_removed(pipeline_env, monkeypatch, capsys):
    docs = load_sample(pipeline_env, 24)
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    old = store.control.active_version()

    monkeypatch.setenv("EA_TITLE_REPEAT", "1")  # a chunking change: a new version
    assert materialize(["shard-00", "shard-01"]).success  # partly backfilled
    new = next(v for v in store.control.versions() if v != old)
    assert main(["activate", new]) == 1  # refused: coverage incomplete
    assert "not activated" in capsys.readouterr().out
    assert store.control.active_version() == old

    assert materialize().success
    following = EmbeddingClient.from_url(
        pipeline_env["REDIS_URL"], refresh_seconds=0.2
    )  # built before the switch
    pinned = EmbeddingClient.from_url(pipeline_env["REDIS_URL"], old)
    assert following.version == old
    assert main(["activate", new]) == 0
    assert store.control.active_version() == new
    time.sleep(0.3)  # one refresh interval
    assert following.get(docs[0]["doc_id"]).version == new
    assert main(["cleanup", new]) == 1  # the active version is never removed
    assert main(["cleanup", old]) == 0
    assert all(e is not None and e.version == new for e in following.get_many([d["doc_id"] for d in docs]))
    with pytest.raises(ControlPlaneLost):  # a client pinned to a removed version says so
        pinned.get(docs[0]["doc_id"])
    assert old not in store.control.versions()
    assert not list(store.entries.scan_ids(old))
    assert len(list(store.entries.scan_ids(new))) == len(docs)
    collection(pipeline_env)  # the source is untouched by all this
    assert main(["versions"]) == 0
    assert f"* {new}" in capsys.readouterr().out


@pytest.mark.slow
def test_a_complete_version_that_rejects_oversized_documents_can_be_activated(
    pipeline_env, monkeypatch, capsys
):
    """Coverage is measured with the version's own rules: a document rejected for its size has
    no entry by rule, and is not counted missing."""
    load_sample(pipeline_env, 12, [{"doc_id": "huge", "title": "Huge", "body": "word " * 400}])
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    old = store.control.active_version()
    assert store.entries.read_one(old, "huge") is not None  # truncated, embedded

    monkeypatch.setenv("EA_MAX_CHARS", "1000")
    monkeypatch.setenv("EA_OVERSIZE", "reject")
    assert materialize().success
    new = next(v for v in store.control.versions() if v != old)
    assert store.control.versions()[new].oversize == "reject"
    assert store.entries.read_one(new, "huge") is None  # rejected, by rule
    assert main(["activate", new]) == 0, capsys.readouterr().out
    assert "12/12 covered" in capsys.readouterr().out
    assert store.control.active_version() == new

    store.entries.drop(new)  # and an incomplete store is still refused
    assert main(["activate", new]) == 1
