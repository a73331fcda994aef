"""Versions side by side, switching readers, cleanup."""

import contextlib
import datetime as dt
import threading
import time

import pytest

from embedding_assets.cli import main
from embedding_assets.client import EmbeddingClient
from embedding_assets.defs.sensors import document_changes_sensor, document_deletions_sensor
from embedding_assets.dev.harness import (
    Daemon,
    collection,
    load_sample,
    materialize,
    metadata,
)
from embedding_assets.stores.control_plane import ControlPlaneLost, dead_letter_key
from embedding_assets.stores.dead_letters import FAILED
from embedding_assets.stores.feature_store import FeatureStore
from embedding_assets.stores.shard_state import version_copy_path

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
    store.control.dead_letters(old).record([("doc-000001", FAILED, "kept for the test")])
    copy = version_copy_path(pipeline_env["EA_PARQUET_DIR"], old)
    assert copy.exists()
    assert main(["cleanup", old]) == 0
    assert not store.client.exists(dead_letter_key(old)) and not copy.exists()  # nothing of it left
    assert all(e is not None and e.version == new for e in following.get_many([d["doc_id"] for d in docs]))
    with pytest.raises(ControlPlaneLost):  # a client pinned to a removed version says so
        pinned.get(docs[0]["doc_id"])
    assert old not in store.control.versions()
    assert not list(store.entries.scan_ids(old))
    assert len(list(store.entries.scan_ids(new))) == len(docs)
    collection(pipeline_env)  # the source is untouched by all this
    assert main(["versions"]) == 0
    listing = capsys.readouterr().out
    assert f"* {new}" in listing
    assert "128-token windows, lead pooling" in listing  # the defaults, as the docs say it prints


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


@pytest.mark.slow
def test_the_active_version_keeps_following_edits_while_a_new_one_is_built(
    pipeline_env, monkeypatch, tmp_path, capsys, measure
):
    """Blue/green (docs/architecture.md): blue serves and its sensors keep it current while green,
    a second deployment with its own shard state, backfills; green is activated only once it
    has caught up with the source."""
    load_sample(pipeline_env, 24)
    green_env = {"EA_TITLE_REPEAT": "1", "EA_PARQUET_DIR": str(tmp_path / "green")}

    @contextlib.contextmanager
    def as_green():  # the environment green's deployment runs with
        with monkeypatch.context() as m:
            for key, value in green_env.items():
                m.setenv(key, value)
            yield

    assert materialize().success  # blue: the first version, active
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    coll = collection(pipeline_env)
    blue = store.control.active_version()
    blue_daemon, green_daemon = Daemon(), Daemon()
    blue_daemon.tick(document_changes_sensor)
    with as_green():
        green_daemon.tick(document_changes_sensor)  # green's sensors run from its start
        result = materialize()  # green's backfill
        assert result.success and metadata(result, "feature_store_entries")["writes_active_version"] is False
    green = next(v for v in store.control.versions() if v != blue)
    assert store.control.active_version() == blue

    edited = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
    coll.update_one(
        {"doc_id": "doc-000001"}, {"$set": {"body": "Edited during the build.", "modified_at": edited}}
    )
    time.sleep(1.1)
    assert blue_daemon.sync(document_changes_sensor) == 1  # blue's deployment follows the edit
    assert measure(coll, store, blue, "blue during the build").none
    capsys.readouterr()
    assert main(["activate", green]) == 1  # green has not caught up yet: refused
    assert "doc-000001" in capsys.readouterr().out

    with as_green():
        assert green_daemon.sync(document_changes_sensor) == 1
    assert measure(coll, store, green, "green caught up").none
    assert main(["activate", green]) == 0
    assert store.control.active_version() == green


@pytest.mark.slow
def test_a_version_that_ranks_worse_is_flagged_and_not_activated_without_force(
    pipeline_env, monkeypatch, capsys
):
    """The English MiniLM, built beside the multilingual default, covers every document but scores
    worse on the labeled set (other languages, English queries): its retrieval_quality check
    fails, and `activate` refuses it unless forced."""
    from embedding_assets.dev.harness import check_results

    load_sample(pipeline_env, 28)
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    good = store.control.active_version()
    assert check_results(materialize())["retrieval_quality"].passed  # the active version passes

    monkeypatch.setenv("EA_MODEL", "all-MiniLM-L6-v2")
    result = materialize()
    worse = str(metadata(result, "feature_store_entries")["version"])
    check = check_results(result)["retrieval_quality"]
    assert not check.passed and "worse than the active version" in check.description
    scores = {v: store.control.quality(v)["score"] for v in (good, worse)}
    assert scores[worse] < scores[good] - 0.02, scores

    assert main(["activate", worse]) == 1
    out = capsys.readouterr().out
    assert "not activated" in out and "more than the margin" in out
    assert store.control.active_version() == good
    assert main(["versions"]) == 0
    listing = capsys.readouterr().out
    assert f"labeled set {scores[good]:.3f}" in listing and f"labeled set {scores[worse]:.3f}" in listing
    assert main(["activate", worse, "--force"]) == 0
    assert "activated anyway (--force)" in capsys.readouterr().out
    assert store.control.active_version() == worse


@pytest.mark.slow
def test_one_deployment_keeps_the_active_version_current_while_it_builds_the_next(
    pipeline_env, monkeypatch, capsys, measure
):
    """A setting in the tag changed in the only deployment: its delta runs write the new version
    and keep the active one current (edits and hard deletes, before and after the new version's
    backfill) until `activate`; then `cleanup` of the old one, run at once, waits for followers,
    and a client reading all along never misses."""
    load_sample(pipeline_env, 24)
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    coll = collection(pipeline_env)
    blue = store.control.active_version()
    daemon = Daemon()
    daemon.tick(document_changes_sensor)
    daemon.tick(document_deletions_sensor)  # the change stream starts
    sensors = (document_changes_sensor, document_deletions_sensor)

    def change(edit: str, delete: str) -> None:
        edited = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
        coll.update_one(
            {"doc_id": edit}, {"$set": {"body": f"Edited {edit} in the upgrade.", "modified_at": edited}}
        )
        coll.delete_one({"doc_id": delete})
        time.sleep(1.1)
        assert daemon.sync(*sensors) >= 2

    monkeypatch.setenv("EA_MAX_CHARS", "150000")  # the deployment's settings change: a new version
    change("doc-000001", "doc-000002")  # before the new version's backfill
    assert measure(coll, store, blue, "active, before the backfill").none
    result = materialize()  # the new version's backfill, in the same deployment
    assert metadata(result, "feature_store_entries")["writes_active_version"] is False
    green = next(v for v in store.control.versions() if v != blue)
    assert store.control.active_version() == blue
    change("doc-000003", "doc-000004")  # after it, before activate
    assert measure(coll, store, blue, "active, after the backfill").none
    assert measure(coll, store, green, "new, after the backfill").none
    followed = metadata(daemon.results[-1], "feature_store_entries")
    assert followed["active_version_followed"] is True, followed

    client = EmbeddingClient.from_url(pipeline_env["REDIS_URL"], refresh_seconds=0.5)
    live = [d["doc_id"] for d in coll.find({}, {"doc_id": 1})]
    reads = {"n": 0, "missed": 0}
    stop = threading.Event()

    def read_all_along() -> None:
        while not stop.is_set():
            found = client.get_many(live)
            reads["n"] += len(found)
            reads["missed"] += sum(e is None for e in found)

    reader = threading.Thread(target=read_all_along)
    reader.start()
    try:
        time.sleep(0.5)
        capsys.readouterr()
        assert main(["activate", green]) == 0, capsys.readouterr().out
        monkeypatch.setenv("EA_CLEANUP_GRACE_SECONDS", "3")
        started = time.monotonic()
        assert main(["cleanup", blue]) == 0  # at once: it waits for the followers first
        assert time.monotonic() - started >= 2
        assert "waiting" in capsys.readouterr().out
        time.sleep(1)
    finally:
        stop.set()
        reader.join()
    assert blue not in store.control.versions() and client.version == green
    assert reads["n"] > len(live) and reads["missed"] == 0, reads
