"""Faults during runs, on servers of the test's own: Redis restarts, MongoDB drops connections,
the process running a shard is killed. Each ends with every document covered, exact counts,
and bounded rework."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pymongo
import pymongo.monitoring
import pytest

from embedding_assets.dev.harness import (
    check_results,
    collection,
    ground_truth,
    load_sample,
    materialize,
    metadata,
    store_state,
)
from embedding_assets.dev.servers import SecantusProcess, ValkeyProcess
from embedding_assets.sources import mongo
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]


@pytest.fixture
def own(tmp_path, monkeypatch):
    """Servers only this test uses, so it may stop and restart them."""
    mongo = SecantusProcess(tmp_path / "mongo")
    mongo.start()
    valkey = ValkeyProcess(tmp_path / "valkey")
    valkey.start()
    env = {
        "MONGO_URI": mongo.uri,
        "MONGO_DB": f"faults_{uuid.uuid4().hex[:6]}",
        "MONGO_COLLECTION": "documents",
        "REDIS_URL": valkey.url,
        "EA_PARQUET_DIR": str(tmp_path / "parquet"),
        "EA_DEVICE": "cpu",
        "EA_RETRY_SECONDS": "60",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield {"mongo": mongo, "valkey": valkey, "env": env, "parquet": tmp_path / "parquet"}
    valkey.stop()
    mongo.stop()


def _checkpoints(parquet: Path) -> list[Path]:
    return sorted((parquet / "document_vectors" / "_checkpoints").glob("*/*.parquet"))


def _wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _assert_complete(env: dict, result, documents: int) -> None:
    assert result.success
    store = FeatureStore.from_url(env["REDIS_URL"])
    version = store.control.active_version()
    assert store_state(store, version) == ground_truth(collection(env), store.control.versions()[version])
    assert metadata(result, "document_snapshots")["rows"] == documents
    assert all(e.passed for e in check_results(result).values()), check_results(result)


def _retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "embedding_assets.retry"]


def test_redis_restarts_during_a_run(own, monkeypatch, caplog):
    caplog.set_level("WARNING", logger="embedding_assets.retry")
    monkeypatch.setenv("EA_CHECKPOINT_DOCS", "4")
    monkeypatch.setenv("EA_CHECKPOINT_SECONDS", "0")  # every batch: the outage starts mid-embedding
    load_sample(own["env"], 120)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", materialize()))
    runner.start()
    _wait_for(lambda: len(_checkpoints(own["parquet"])) >= 2)  # embedding is under way
    own["valkey"].stop()
    # down until the vectors are stored: the checks and the publish that follow must hit it
    _wait_for(lambda: len(list((own["parquet"] / "document_vectors").glob("*.parquet"))) == 16)
    time.sleep(2)
    own["valkey"].start()
    runner.join(timeout=300)
    result = outcome["result"]
    assert any("ConnectionError" in m for m in _retries(caplog))  # the outage hit Redis calls
    _assert_complete(own["env"], result, 120)
    assert metadata(result, "document_vectors")["embedded"] == 120
    assert metadata(result, "feature_store_entries")["written"] == 120


class _RestartMongoAtPage(pymongo.monitoring.CommandListener):
    """Stops the server when the n-th page of the collection scan is requested, and starts it
    again a few seconds later: longer than the driver's own retry can wait."""

    def __init__(self, server: SecantusProcess, collection: str, page: int) -> None:
        self.server, self.collection, self.page = server, collection, page
        self.seen = 0
        self.fired = False

    def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
        target = event.command.get("find") or event.command.get("collection")  # find, then getMore
        if self.fired or event.command_name not in ("find", "getMore") or target != self.collection:
            return
        self.seen += 1
        if self.seen == self.page:
            self.fired = True
            self.server.stop()  # every open connection is cut

            def come_back() -> None:
                time.sleep(3)
                self.server.start()

            threading.Thread(target=come_back, daemon=True).start()

    def succeeded(self, event: object) -> None:
        pass

    def failed(self, event: object) -> None:
        pass


def test_mongodb_drops_connections_in_the_middle_of_a_scan(own, monkeypatch, caplog, static_dir):
    caplog.set_level("WARNING", logger="embedding_assets.retry")
    monkeypatch.setenv("EA_BACKEND", "static")  # the fault is in the scan: any model will do
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    monkeypatch.setenv("EA_READ_BATCH", "25")  # 150 documents: six pages
    monkeypatch.setattr(mongo, "_SECANTUS_SCAN_PAGE", 0)  # (a scan's pages are 10,000 at least)
    monkeypatch.setenv("EA_MONGO_TIMEOUT_MS", "1000")  # the driver gives up before the server is back
    load_sample(own["env"], 150)
    listener = _RestartMongoAtPage(own["mongo"], "documents", page=3)
    pymongo.monitoring.register(listener)  # applies to clients created from now on
    result = materialize()
    assert listener.fired
    assert any("resuming" in m or "_cursor_after" in m for m in _retries(caplog))  # the scan resumed
    _assert_complete(own["env"], result, 150)
    assert metadata(result, "document_vectors")["embedded"] == 150


KILLABLE = """
from embedding_assets.dev.harness import materialize
materialize()
"""


def _kept(parquet: Path) -> int:
    """Documents whose vectors a killed run leaves: in checkpointed batches or in shards it
    stored whole (a kill between the two can leave a document in both)."""
    import polars as pl

    stored = sorted((parquet / "document_vectors").glob("shard-*.parquet"))
    ids: set[str] = set()
    for f in [*_checkpoints(parquet), *stored]:
        with contextlib.suppress(OSError):  # cleared by the running step once its shard was stored
            ids.update(pl.read_parquet(f, columns=["doc_id"])["doc_id"].to_list())
    return len(ids)


def test_a_killed_shard_run_redoes_at_most_one_batch(own, monkeypatch):
    batch = 4
    monkeypatch.setenv("EA_CHECKPOINT_DOCS", str(batch))
    monkeypatch.setenv("EA_CHECKPOINT_SECONDS", "0")  # every batch kept: the bound is one batch
    load_sample(own["env"], 64)
    env = {**os.environ, "EA_CHECKPOINT_DOCS": str(batch), "EA_CHECKPOINT_SECONDS": "0"}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(lambda: _kept(own["parquet"]) >= 12 or process.poll() is not None, timeout=240)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    saved = _kept(own["parquet"])
    assert 12 <= saved < 64  # killed in the middle of the embedding step
    result = materialize()
    _assert_complete(own["env"], result, 64)
    # everything checkpointed or stored before the kill is reused: only the rest is embedded again
    assert metadata(result, "document_vectors")["embedded"] == 64 - saved
    assert _checkpoints(own["parquet"]) == []  # cleared once the shards were stored whole
