"""Sources whose clocks and identities misbehave: dates in the future, time going back, duplicate
doc_ids, doc_ids renamed in place. After each, the store equals what the collection says."""

import datetime as dt
import time

import pytest

from embedding_assets.defs import sensors
from embedding_assets.defs.partitions import NUM_SHARDS
from embedding_assets.defs.sensors import document_changes_sensor, document_deletions_sensor
from embedding_assets.dev.harness import (
    Daemon,
    collection,
    load_sample,
    materialize,
)
from embedding_assets.lib.change_tracking import group_by_shard, shard_runs
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]
SENSORS = (document_changes_sensor, document_deletions_sensor)


@pytest.fixture(autouse=True)
def fast_tier(monkeypatch, static_dir):
    """What is tested is which documents reach the store, not their vectors: the static tier."""
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)


class Filled:
    def __init__(self, env: dict[str, str], measure, extra: list[dict] | None = None) -> None:
        load_sample(env, 24, extra or [])
        assert materialize().success
        self.coll = collection(env)
        self.store = FeatureStore.from_url(env["REDIS_URL"])
        self.version = self.store.control.active_version()
        self.measure = measure
        self.daemon = Daemon()
        for sensor in SENSORS:
            self.daemon.tick(sensor)  # cursors start at the present

    def matches_the_collection(self, label: str = "") -> bool:
        return self.measure(self.coll, self.store, self.version, label).none

    def sync(self) -> int:
        time.sleep(1.1)  # the reads that follow are a whole second after the entries' writes
        return self.daemon.sync(*SENSORS)


def _recent(seconds: int = 10) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


def test_a_document_dated_in_the_future_hides_no_later_edit(pipeline_env, measure):
    filled = Filled(pipeline_env, measure)
    filled.coll.insert_one(
        {
            "doc_id": "ahead",
            "title": "Ahead",
            "body": "Dated far ahead.",
            "modified_at": dt.datetime(2099, 1, 1),
        }
    )
    assert filled.sync() >= 1  # followed apart from the cursor
    assert filled.store.entries.read_one(filled.version, "ahead") is not None
    filled.coll.update_one(
        {"doc_id": "doc-000001"}, {"$set": {"body": "An ordinary edit.", "modified_at": _recent()}}
    )
    assert filled.sync() == 1
    assert filled.matches_the_collection()
    # the date corrected to the present, with new text: the entry follows although its date went back
    filled.coll.update_one({"doc_id": "ahead"}, {"$set": {"body": "Dated right.", "modified_at": _recent(8)}})
    filled.sync()
    assert filled.matches_the_collection()


def test_a_cursor_an_earlier_release_pinned_in_the_future_is_repaired(pipeline_env, measure):
    filled = Filled(pipeline_env, measure)
    name = document_changes_sensor.name
    filled.daemon.cursors[name] = '{"modified_at": "2099-01-01T00:00:00+00:00", "doc_id": "ahead"}'
    filled.coll.update_one(
        {"doc_id": "doc-000002"}, {"$set": {"body": "Edited later.", "modified_at": _recent()}}
    )
    filled.sync()
    assert filled.matches_the_collection()
    assert "2099" not in filled.daemon.cursors[name]


def test_text_restored_with_an_earlier_date_replaces_the_entry(pipeline_env, measure):
    filled = Filled(pipeline_env, measure)
    doc = filled.coll.find_one({"doc_id": "doc-000003"})
    earlier = doc["modified_at"] - dt.timedelta(days=30)  # restored from a backup
    filled.coll.update_one(
        {"doc_id": "doc-000003"}, {"$set": {"body": "Restored text.", "modified_at": earlier}}
    )
    time.sleep(1.1)
    result = materialize()  # one sweep (the change cursor is past that date)
    assert result.success
    assert filled.matches_the_collection()


def test_deleting_the_newer_of_two_duplicates_serves_the_remaining_copy(pipeline_env, measure):
    later = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    duplicate = {"doc_id": "doc-000004", "title": "Copy", "body": "The newer copy.", "modified_at": later}
    filled = Filled(pipeline_env, measure, [])
    newer_id = filled.coll.insert_one(dict(duplicate)).inserted_id
    time.sleep(1.1)
    assert materialize().success
    assert filled.matches_the_collection()  # the newer copy is served
    filled.coll.delete_one({"_id": newer_id})
    filled.sync()
    assert filled.matches_the_collection()  # the remaining copy, not the deleted one
    assert materialize().success
    assert filled.matches_the_collection()


def test_a_doc_id_renamed_in_place_leaves_no_entry_behind(pipeline_env, measure):
    filled = Filled(pipeline_env, measure)
    filled.coll.update_one(
        {"doc_id": "doc-000005"}, {"$set": {"doc_id": "renamed-5", "modified_at": _recent()}}
    )
    filled.sync()
    assert filled.store.entries.read_one(filled.version, "doc-000005") is None
    assert filled.store.entries.read_one(filled.version, "renamed-5") is not None
    assert filled.matches_the_collection()


def test_edits_stamped_now_are_requested_once(pipeline_env, measure):
    """Inside the settling window they are neither future-dated nor missed nor taken twice: the
    next tick's runs, one per range of their shards, take them all; when the cursor reaches them
    (it stays behind the settle window), nothing more."""
    filled = Filled(pipeline_env, measure)
    ids = [f"doc-{i:06d}" for i in range(6)]
    now = dt.datetime.now(dt.UTC)
    for doc_id in ids:
        filled.coll.update_one({"doc_id": doc_id}, {"$set": {"body": f"Now {doc_id}.", "modified_at": now}})
    requests = filled.daemon.tick(document_changes_sensor)  # visible already: requested at once
    asked = [d for r in requests for d in r.run_config["ops"]["document_snapshots"]["config"]["doc_ids"]]
    by_shard = group_by_shard(ids, NUM_SHARDS)
    assert len(by_shard) > 1  # several shards
    assert sorted(asked) == ids and len(requests) == len(shard_runs(by_shard))
    filled.daemon.run(requests)
    time.sleep(sensors.SETTLE_SECONDS + 1)
    assert filled.daemon.sync(*SENSORS) == 0  # settled now: not requested again
    assert filled.matches_the_collection()
