"""The feature store follows the collection: sensors, deletions by three routes, sweeps."""

import datetime as dt
import itertools

import dagster as dg
import numpy as np
import pytest

from embedding_assets.client import EmbeddingClient
from embedding_assets.defs import sensors
from embedding_assets.defs.jobs import daily_sweep
from embedding_assets.defs.partitions import NUM_SHARDS
from embedding_assets.defs.sensors import document_changes_sensor, document_deletions_sensor
from embedding_assets.dev.harness import (
    Daemon,
    collection,
    ground_truth,
    load_sample,
    metadata,
    store_state,
)
from embedding_assets.lib.change_tracking import group_by_shard, shard_runs
from embedding_assets.lib.chunking import chunk_texts
from embedding_assets.lib.text import embeddable_text
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]
SENSORS = (document_changes_sensor, document_deletions_sensor)


class Clock:
    """modified_at values that move forward, millisecond precision as MongoDB stores them."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> dt.datetime:
        return dt.datetime(2026, 6, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=next(self._ticks))


def sweep_request() -> dg.RunRequest:
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 6, 2, 3, tzinfo=dt.UTC))
    return daily_sweep(context)


def _summed(results, asset: str, key: str) -> int:
    return sum(int(metadata(r, asset).get(key, 0)) for r in results)


def test_a_day_of_changes(pipeline_env, monkeypatch, embedder):
    # small pages and one page per tick: cursors must carry equal timestamps across boundaries
    monkeypatch.setattr(sensors, "PAGE_SIZE", 3)
    monkeypatch.setattr(sensors, "MAX_PAGES_PER_TICK", 1)
    coll = collection(pipeline_env)
    docs = load_sample(pipeline_env, 40)
    ids = [d["doc_id"] for d in docs]
    clock = Clock()
    daemon = Daemon()
    daemon.run([sweep_request()])  # the first fill
    assert daemon.sync(*SENSORS) == 0  # sensors start where the backfill left off
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    spec = store.control.versions()[version]

    # inserts, five of them sharing one modified_at, and body edits
    for i in range(4):
        coll.insert_one(
            {
                "doc_id": f"new-{i}",
                "title": "Fresh",
                "body": f"New document {i} about ovens.",
                "modified_at": clock(),
            }
        )
    tie = clock()
    for i in range(5):
        coll.insert_one(
            {"doc_id": f"tie-{i}", "title": "Same instant", "body": f"Tied {i} on bread.", "modified_at": tie}
        )
    for doc_id in ids[:3]:
        coll.update_one(
            {"doc_id": doc_id}, {"$set": {"body": f"Rewritten body of {doc_id}.", "modified_at": clock()}}
        )
    start = len(daemon.results)
    assert daemon.sync(*SENSORS) > 0
    assert _summed(daemon.results[start:], "document_vectors", "embedded") == 4 + 5 + 3
    assert store_state(store, version) == ground_truth(coll, spec)

    # metadata-only edits: restamped, never re-embedded
    for doc_id in ids[3:6]:
        coll.update_one({"doc_id": doc_id}, {"$set": {"indexed_at": clock(), "modified_at": clock()}})
    start = len(daemon.results)
    daemon.sync(*SENSORS)
    assert _summed(daemon.results[start:], "document_vectors", "embedded") == 0
    assert _summed(daemon.results[start:], "feature_store_entries", "entries_source_newer") == 3
    assert store_state(store, version) == ground_truth(coll, spec)

    # deletions: hard deletes (change stream), tombstones, a body emptied, then a re-insert
    hard = ids[6:9]
    coll.delete_many({"doc_id": {"$in": hard}})
    coll.update_many({"doc_id": {"$in": ids[9:11]}}, {"$set": {"is_deleted": True, "modified_at": clock()}})
    coll.update_one({"doc_id": ids[11]}, {"$set": {"deleted_at": clock(), "modified_at": clock()}})
    coll.update_one({"doc_id": ids[12]}, {"$set": {"title": "", "body": " ", "modified_at": clock()}})
    daemon.sync(*SENSORS)
    state = store_state(store, version)
    assert not set(hard + ids[9:13]) & set(state)
    assert state == ground_truth(coll, spec)
    coll.insert_one(
        {"doc_id": hard[0], "title": "Back", "body": "Re-inserted with new text.", "modified_at": clock()}
    )
    daemon.sync(*SENSORS)
    assert store_state(store, version) == ground_truth(coll, spec)

    # deletions while nothing watched: only the daily reconciliation sees them
    unseen = ids[13:15]
    coll.delete_many({"doc_id": {"$in": unseen}})
    daemon.cursors[document_deletions_sensor.name] = None  # the stream restarts after the deletes
    daemon.sync(*SENSORS)
    assert set(unseen) <= set(store_state(store, version))
    daemon.run([sweep_request()])
    sweep = daemon.results[-1]
    assert metadata(sweep, "feature_store_entries")["deleted"] == 2
    assert metadata(sweep, "document_vectors")["embedded"] == 0  # nothing else changed
    assert metadata(sweep, "feature_store_entries")["written"] == 0
    assert store_state(store, version) == ground_truth(coll, spec)

    # the re-embedded vectors are the model's
    entry = EmbeddingClient(store).get(ids[0])
    text = embeddable_text("", f"Rewritten body of {ids[0]}.").text
    title = next(d["title"] for d in docs if d["doc_id"] == ids[0])
    text = embeddable_text(title, f"Rewritten body of {ids[0]}.", title_repeat=spec.title_repeat).text
    [chunks] = chunk_texts([text], embedder.tokenizer, window=spec.window_tokens, overlap=spec.overlap_tokens)
    direct = embedder.model.encode(
        [c.text for c in chunks], prompt=embedder.model.prompts.get("document")
    ).mean(axis=0)
    assert float(entry.vector @ direct / np.linalg.norm(entry.vector) / np.linalg.norm(direct)) > 0.99


def test_rerunning_unchanged_shards_embeds_and_writes_nothing_but_restamps_old_entries(
    pipeline_env, monkeypatch
):
    load_sample(pipeline_env, 30)
    daemon = Daemon()
    daemon.run([sweep_request()])
    first = daemon.results[-1]
    assert metadata(first, "document_vectors")["embedded"] == 30
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    before = store.entries.read(version, sorted(store.entries.scan_ids(version)))

    daemon.run([sweep_request()])
    again = daemon.results[-1]
    assert metadata(again, "chunked_text")["chunked"] == 0
    assert metadata(again, "document_vectors")["embedded"] == 0
    assert metadata(again, "document_vectors")["model_loaded"] is False  # nothing to embed
    assert metadata(again, "feature_store_entries")["written"] == 0
    assert metadata(again, "feature_store_entries")["entries_current"] == 30
    assert store.entries.read(version, sorted(store.entries.scan_ids(version))) == before

    # entries older than the maximum age: restamped with a renewed TTL, still not re-embedded
    monkeypatch.setenv("EA_MAX_AGE_SECONDS", "-1")
    daemon.run([sweep_request()])
    old = daemon.results[-1]
    assert metadata(old, "document_vectors")["embedded"] == 0
    assert metadata(old, "feature_store_entries")["entries_old"] == 30
    assert metadata(old, "feature_store_entries")["written"] == 30
    after = store.entries.read(version, sorted(store.entries.scan_ids(version)))
    assert [a[28:] for a in after] == [b[28:] for b in before]  # same vectors, new stamps


def test_change_stream_sensor_starts_then_follows_deletes(pipeline_env):
    docs = load_sample(pipeline_env, 12)
    daemon = Daemon()
    daemon.run([sweep_request()])
    assert daemon.tick(document_deletions_sensor) == []  # starts the stream
    collection(pipeline_env).delete_one({"doc_id": docs[0]["doc_id"]})
    requests = daemon.tick(document_deletions_sensor)
    assert len(requests) == 1
    assert requests[0].run_config["ops"]["document_snapshots"]["config"]["doc_ids"] == [docs[0]["doc_id"]]
    assert daemon.tick(document_deletions_sensor) == []
    # deletions scattered over many shards: one run per contiguous range of their shards
    scattered = [d["doc_id"] for d in docs[1:]]
    by_shard = group_by_shard(scattered, NUM_SHARDS)
    assert len(shard_runs(by_shard)) > 2
    collection(pipeline_env).delete_many({"doc_id": {"$in": scattered}})
    requests = daemon.tick(document_deletions_sensor)
    assert len(requests) == len(shard_runs(by_shard))
    asked = [d for r in requests for d in r.run_config["ops"]["document_snapshots"]["config"]["doc_ids"]]
    assert sorted(asked) == sorted(scattered)


def test_hard_deletes_after_the_state_folder_is_lost_leave_nothing_served(pipeline_env, measure):
    """The shard state (EA_PARQUET_DIR) is gone: a delete event's ``_id`` leads to no doc_id there,
    so the deletions sensor asks for a full audit, whose repair removes the entries."""
    import shutil

    from embedding_assets.defs.audit import store_repair_sensor
    from embedding_assets.defs.jobs import store_audit_job

    docs = load_sample(pipeline_env, 12)
    coll = collection(pipeline_env)
    daemon = Daemon()
    daemon.run([sweep_request()])
    assert daemon.tick(document_deletions_sensor) == []  # starts the stream
    shutil.rmtree(pipeline_env["EA_PARQUET_DIR"])
    gone = [docs[0]["doc_id"], docs[1]["doc_id"]]
    coll.delete_many({"doc_id": {"$in": gone}})
    requests = daemon.tick(document_deletions_sensor)
    assert [r.job_name for r in requests] == [store_audit_job.name]
    daemon.run(requests)
    daemon.sync(store_repair_sensor)
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    assert measure(coll, store, version, "hard deletes after the state was lost").none
    assert not set(gone) & set(store.entries.scan_ids(version))

    # a full scan (the sweep) makes the state whole again: a delete of a document it never knew
    # (inserted and deleted between two scans) asks for nothing
    daemon.run([sweep_request()])
    coll.insert_one({"doc_id": "brief", "title": "Brief", "body": "Here and gone."})
    coll.delete_one({"doc_id": "brief"})
    assert daemon.tick(document_deletions_sensor) == []


def test_while_runs_wait_to_start_the_sensors_hold_their_cursors_and_then_take_everything(pipeline_env):
    """Backpressure: no run is added to a queue; the changes gather into the next tick's runs."""
    from dagster._core.storage.dagster_run import DagsterRun

    docs = load_sample(pipeline_env, 24)
    coll = collection(pipeline_env)
    daemon = Daemon()
    daemon.run([sweep_request()])
    daemon.tick(document_changes_sensor)  # the cursor starts at the newest document
    waiting = DagsterRun(
        job_name="embed_documents",
        run_id="waiting",
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={"embedding_assets/trigger": "changes"},
    )
    daemon.instance.add_run(waiting)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=sensors.SETTLE_SECONDS + 1)
    edited = [d["doc_id"] for d in docs[:6]]
    for doc_id in edited:
        coll.update_one({"doc_id": doc_id}, {"$set": {"body": f"Waited {doc_id}.", "modified_at": now}})
    before = daemon.cursors[document_changes_sensor.name]
    assert daemon.tick(document_changes_sensor) == []
    assert daemon.cursors[document_changes_sensor.name] == before  # nothing taken, nothing lost

    daemon.instance.delete_run("waiting")  # it started and ended

    # its own runs executing up to the limit hold the sensor back too (each loads a model); a
    # sweep or the deletion sensor's runs executing do not (they never starve the changes)
    def executing(run_id: str, trigger: str) -> None:
        run = DagsterRun(
            job_name="embed_documents",
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags={"embedding_assets/trigger": trigger},
        )
        daemon.instance.add_run(run)

    for n in range(sensors.MAX_DELTA_RUNS_IN_FLIGHT):
        executing(f"changes-{n}", "changes")
        executing(f"deletions-{n}", "deletions")
    executing("sweep", "sweep")
    assert daemon.tick(document_changes_sensor) == []
    assert daemon.cursors[document_changes_sensor.name] == before
    daemon.instance.delete_run("changes-0")  # one ended: below the limit
    requests = daemon.tick(document_changes_sensor)
    asked = [d for r in requests for d in r.run_config["ops"]["document_snapshots"]["config"]["doc_ids"]]
    assert sorted(asked) == sorted(edited)


def test_each_sensor_waits_only_for_its_own_runs_and_deletions_start_first():
    """A deletion is never held back by change runs in the queue (nor changes by deletions), and
    the queue starts deletion runs before change runs, and both before whole-collection runs."""
    from dagster._core.storage.dagster_run import DagsterRun

    with dg.instance_for_test() as instance:
        for n, trigger in enumerate(["changes", "changes", "repair"]):
            instance.add_run(
                DagsterRun(
                    job_name="embed_documents",
                    run_id=f"queued-{n}",
                    status=dg.DagsterRunStatus.NOT_STARTED,
                    tags={"embedding_assets/trigger": trigger},
                )
            )
        assert sensors.runs_waiting(instance, "changes") == 2
        assert sensors.runs_waiting(instance, "repair") == 1
        assert sensors.runs_waiting(instance, "deletions") == 0

    [deletion] = sensors.delta_run_requests("deletions", "p", ["doc-000001"])
    [change] = sensors.delta_run_requests("changes", "p", ["doc-000001"])
    priority = {
        r.tags["embedding_assets/trigger"]: int(r.tags["dagster/priority"]) for r in (deletion, change)
    }
    assert priority["deletions"] > priority["changes"] > 0  # a sweep or backfill runs at 0


def test_a_delta_run_embeds_only_its_own_documents_not_an_edit_another_run_is_applying(pipeline_env, measure):
    """A change run has stored an edited document's snapshot when a deletion run of the same shard
    executes: the deletion run embeds nothing (no model load), the change run embeds its edit,
    and the store ends equal to the collection."""
    from embedding_assets.defs.resources import build_resources
    from embedding_assets.dev.harness import GRAPH, metadata, run_arguments
    from embedding_assets.lib.sharding import shard_of

    docs = load_sample(pipeline_env, 40)
    daemon = Daemon()
    daemon.run([sweep_request()])
    by_shard: dict[int, list[str]] = {}
    for d in docs:
        by_shard.setdefault(shard_of(d["doc_id"], NUM_SHARDS), []).append(d["doc_id"])
    edited, deleted = next(ids for ids in by_shard.values() if len(ids) >= 2)[:2]
    coll = collection(pipeline_env)
    coll.update_one({"doc_id": edited}, {"$set": {"body": "Edited while a deletion ran beside."}})
    coll.delete_one({"doc_id": deleted})
    [change] = sensors.delta_run_requests("changes", "c", [edited])
    # the change run has read its document (its first step) and not embedded it yet
    kwargs = run_arguments(change)
    kwargs["selection"] = [GRAPH[0]]  # document_snapshots alone
    kwargs["run_config"] = {"ops": {"document_snapshots": change.run_config["ops"]["document_snapshots"]}}
    assert dg.materialize(GRAPH, resources=build_resources(), instance=daemon.instance, **kwargs).success

    daemon.run(sensors.delta_run_requests("deletions", "d", [deleted]))
    beside = metadata(daemon.results[-1], "document_vectors")
    assert beside["embedded"] == 0 and beside["model_loaded"] is False, beside

    daemon.run([change])
    own = metadata(daemon.results[-1], "document_vectors")
    assert own["embedded"] == 1, own
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    assert measure(coll, store, store.control.active_version(), "after both runs").none


def test_an_edit_is_requested_at_the_next_tick_not_after_the_settle_time_and_only_once(pipeline_env):
    """The cursor waits SETTLE_SECONDS behind the present; an edit already visible goes at once,
    and when the cursor reaches it, it is not requested again (a later edit of it is)."""
    import time

    docs = load_sample(pipeline_env, 8)
    coll = collection(pipeline_env)
    daemon = Daemon()
    daemon.tick(document_changes_sensor)  # the cursor starts at the newest document
    doc_id = docs[0]["doc_id"]
    coll.update_one(
        {"doc_id": doc_id}, {"$set": {"body": "Edited now.", "modified_at": dt.datetime.now(dt.UTC)}}
    )

    def asked(requests: list) -> list[str]:
        return [d for r in requests for d in r.run_config["ops"]["document_snapshots"]["config"]["doc_ids"]]

    assert asked(daemon.tick(document_changes_sensor)) == [doc_id]  # at once, not 5 s later
    time.sleep(sensors.SETTLE_SECONDS + 1)
    assert daemon.tick(document_changes_sensor) == []  # the cursor passed it: not again
    coll.update_one({"doc_id": doc_id}, {"$set": {"body": "Again.", "modified_at": dt.datetime.now(dt.UTC)}})
    assert asked(daemon.tick(document_changes_sensor)) == [doc_id]
