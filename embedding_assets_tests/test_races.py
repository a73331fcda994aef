"""Runs racing on an instance without pools (the tests' ephemeral ones): whatever order their
reads and writes interleave in, the store ends as the collection says.

A full run is held between its MongoDB read and its first write (a real source, paused by the
test) while a delta run inserts, deletes and edits documents to completion; then the full run
goes on. Its older read must not undo what the delta did.
"""

import datetime as dt
import threading
import time

import dagster as dg
import pytest

from embedding_assets.defs.partitions import NUM_SHARDS
from embedding_assets.defs.resources import DocumentSourceResource, build_resources
from embedding_assets.defs.sensors import delta_run_requests
from embedding_assets.dev.harness import (
    GRAPH,
    collection,
    execute,
    load_sample,
    materialize,
    run_arguments,
)
from embedding_assets.stores.feature_store import FeatureStore
from embedding_assets.stores.shard_state import ShardStateStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]

READ = threading.Event()  # the paused run has read MongoDB
GO_ON = threading.Event()  # and may write


class _Paused:
    """The real source, except that what a run reads is read whole, then waits for GO_ON."""

    def __init__(self, real: object) -> None:
        self.real = real

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def _hold(self, docs: list) -> object:
        READ.set()
        assert GO_ON.wait(120), "the test never let the paused run go on"
        return iter(docs)

    def iter_shards(self, shards, num_shards, **kw):
        return self._hold(list(self.real.iter_shards(shards, num_shards, **kw)))  # type: ignore[attr-defined]

    def iter_by_ids(self, doc_ids):
        return self._hold(list(self.real.iter_by_ids(doc_ids)))  # type: ignore[attr-defined]


class PausedSource(DocumentSourceResource):
    def source(self):
        return _Paused(super().source())


def _paused_run(env: dict[str, str], request: dg.RunRequest | None = None) -> tuple[threading.Thread, dict]:
    """A full run (or ``request``'s delta run) in the background, held after its MongoDB read."""
    READ.clear()
    GO_ON.clear()
    outcome: dict = {}

    def run() -> None:
        source = PausedSource(
            uri=env["MONGO_URI"], database=env["MONGO_DB"], collection=env["MONGO_COLLECTION"]
        )
        try:
            if request is None:
                outcome["result"] = materialize(resources={"source": source}, raise_on_error=False)
            else:
                outcome["result"] = dg.materialize(
                    GRAPH,
                    resources={**build_resources(), "source": source},
                    instance=dg.DagsterInstance.ephemeral(),
                    raise_on_error=False,
                    **run_arguments(request),
                )
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert READ.wait(300), "the paused run never read MongoDB"
    return thread, outcome


@pytest.fixture
def filled(pipeline_env: dict[str, str]) -> tuple:
    """24 documents backfilled: (collection, store, active version)."""
    load_sample(pipeline_env, 24)
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    return collection(pipeline_env), store, store.control.active_version()


def _finish(thread: threading.Thread, outcome: dict) -> None:
    GO_ON.set()
    thread.join(600)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].success


def test_a_full_run_read_before_a_delta_undoes_nothing_of_it(pipeline_env, filled, measure):
    coll, store, version = filled

    time.sleep(1.1)  # the full run's read is a second after the backfill's writes
    thread, outcome = _paused_run(pipeline_env)
    time.sleep(1.1)  # and the delta's read a second after the full run's
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
    coll.insert_one({"doc_id": "inserted", "title": "New", "body": "Inserted meanwhile.", "modified_at": now})
    coll.delete_one({"doc_id": "doc-000003"})
    coll.update_one({"doc_id": "doc-000005"}, {"$set": {"body": "Edited meanwhile.", "modified_at": now}})
    changed = ["inserted", "doc-000003", "doc-000005"]
    instance = dg.DagsterInstance.ephemeral()
    for request in delta_run_requests("changes", "race", changed):
        execute(request, instance)
    assert store.entries.read_one(version, "inserted") is not None
    assert store.entries.read_one(version, "doc-000003") is None

    _finish(thread, outcome)  # the full run writes what it read before the delta

    assert measure(coll, store, version).none
    # the shard state holds the delta's documents too: later deltas and deletions start from it
    state = ShardStateStore(pipeline_env["EA_PARQUET_DIR"], NUM_SHARDS)
    for asset in ("document_snapshots", "chunked_text", "document_vectors"):
        found = state.find(asset, "doc_id", ["inserted", "doc-000003"], ["doc_id"])
        assert found["doc_id"].to_list() == ["inserted"], asset


def test_a_delta_read_before_a_full_run_but_written_after_it_changes_nothing_newer(
    pipeline_env, filled, measure
):
    coll, store, version = filled
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=20)
    coll.update_one({"doc_id": "doc-000005"}, {"$set": {"body": "First edit.", "modified_at": then}})
    time.sleep(1.1)
    [request] = delta_run_requests("changes", "old", ["doc-000005"])
    thread, outcome = _paused_run(pipeline_env, request)  # has read the first edit, and waits
    time.sleep(1.1)
    # meanwhile a second edit, dated the same (clocks disagree), read by a whole full run
    coll.update_one({"doc_id": "doc-000005"}, {"$set": {"body": "Second edit.", "modified_at": then}})
    assert materialize().success
    _finish(thread, outcome)  # then the delta writes what it read first

    assert measure(coll, store, version).none
    state = ShardStateStore(pipeline_env["EA_PARQUET_DIR"], NUM_SHARDS)
    for asset, column in (("document_snapshots", "body"), ("chunked_text", "chunks")):
        [value] = state.find(asset, "doc_id", ["doc-000005"], [column])[column].to_list()
        assert "Second edit." in str(value), asset


def test_a_first_fill_overtaken_by_a_delta_after_it_found_the_version_empty_undoes_nothing(
    pipeline_env, monkeypatch, measure
):
    """A first fill (no key when it began publishing) neither reads entries before writing nor
    scans for orphans. Held right after it found the version empty, while a delta run inserts,
    deletes and edits to completion, it then writes its older read: the deletion stays, the newer
    edit stays, and the inserted document it never read keeps its entry."""
    from embedding_assets.stores.redis_entries import RedisEntryStore

    load_sample(pipeline_env, 24)
    coll = collection(pipeline_env)
    real = RedisEntryStore.has_entries
    full_run: dict = {}

    def held(self, version):
        found = real(self, version)
        if threading.get_ident() == full_run.get("thread") and not found:
            READ.set()
            assert GO_ON.wait(120), "the test never let the first fill go on"
        return found

    monkeypatch.setattr(RedisEntryStore, "has_entries", held)
    READ.clear()
    GO_ON.clear()
    outcome: dict = {}

    def run() -> None:
        full_run["thread"] = threading.get_ident()
        try:
            outcome["result"] = materialize(raise_on_error=False)
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert READ.wait(300), "the first fill never reached its publish"
    time.sleep(1.1)  # the delta's read is a second after the first fill's
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
    coll.insert_one({"doc_id": "inserted", "title": "New", "body": "Inserted meanwhile.", "modified_at": now})
    coll.delete_one({"doc_id": "doc-000003"})
    coll.update_one({"doc_id": "doc-000005"}, {"$set": {"body": "Edited meanwhile.", "modified_at": now}})
    instance = dg.DagsterInstance.ephemeral()
    for request in delta_run_requests("changes", "race", ["inserted", "doc-000003", "doc-000005"]):
        execute(request, instance)
    _finish(thread, outcome)

    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    assert store.entries.read_one(version, "inserted") is not None
    assert store.entries.read_one(version, "doc-000003") is None
    assert measure(coll, store, version).none
