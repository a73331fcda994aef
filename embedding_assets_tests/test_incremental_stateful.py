"""Random sequences of source changes, sensor ticks and sweeps: the store must equal the truth."""

import datetime as dt
import os
import uuid

import pymongo
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from embedding_assets.defs.sensors import document_changes_sensor, document_deletions_sensor
from embedding_assets.dev.harness import Daemon, ground_truth, store_state, sweep_request
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]
SENSORS = (document_changes_sensor, document_deletions_sensor)
WORDS = ["bread", "oven", "flour", "cache", "index", "storm", "goal", "sea", "yeast", "disk"]
texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=8).map(" ".join)


def make_machine(mongo_uri: str, redis_url: str, parquet_dir: str, static_dir: str) -> type:
    class SourceFollowsStore(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.db = f"ea_prop_{uuid.uuid4().hex[:8]}"
            os.environ.update(
                {
                    "MONGO_URI": mongo_uri,
                    "MONGO_DB": self.db,
                    "MONGO_COLLECTION": "documents",
                    "REDIS_URL": redis_url,
                    "EA_PARQUET_DIR": f"{parquet_dir}/{self.db}",
                    # which documents the store holds is what is tested: the fast tier
                    "EA_BACKEND": "static",
                    "EA_STATIC_DIR": static_dir,
                }
            )
            redis.Redis.from_url(redis_url).flushdb()
            self.coll = pymongo.MongoClient(mongo_uri, tz_aware=True)[self.db]["documents"]
            self.t = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
            self.counter = 0
            self.live: set[str] = set()
            self.gone: set[str] = set()
            self.needs_sweep = False
            for _ in range(4):
                self._insert("seed text about bread and ovens")
            self.daemon = Daemon()
            self.daemon.run([sweep_request()])
            self.daemon.sync(*SENSORS)
            self.store = FeatureStore.from_url(redis_url)

        def teardown(self) -> None:
            if hasattr(self, "coll"):
                self.coll.database.client.drop_database(self.db)

        def _now(self) -> dt.datetime:
            self.t += dt.timedelta(milliseconds=7)
            return self.t

        def _insert(self, body: str, doc_id: str | None = None, when: dt.datetime | None = None) -> None:
            if doc_id is None:
                self.counter += 1
                doc_id = f"h-{self.counter}"
            self.coll.insert_one(
                {"doc_id": doc_id, "title": "T", "body": body, "modified_at": when or self._now()}
            )
            self.live.add(doc_id)
            self.gone.discard(doc_id)

        def _pick(self, data: st.DataObject, pool: set[str]) -> str | None:
            return data.draw(st.sampled_from(sorted(pool))) if pool else None

        @rule(body=texts, twins=st.booleans())
        def insert(self, body: str, twins: bool) -> None:
            when = self._now()
            self._insert(body, when=when)
            if twins:  # two documents with one modified_at
                self._insert(body + " twin", when=when)

        @rule(data=st.data(), body=texts)
        def edit_body(self, data: st.DataObject, body: str) -> None:
            if doc_id := self._pick(data, self.live):
                self.coll.update_one({"doc_id": doc_id}, {"$set": {"body": body, "modified_at": self._now()}})

        @rule(data=st.data())
        def edit_metadata(self, data: st.DataObject) -> None:
            if doc_id := self._pick(data, self.live):
                self.coll.update_one(
                    {"doc_id": doc_id}, {"$set": {"indexed_at": self._now(), "modified_at": self._now()}}
                )

        @rule(data=st.data())
        def hard_delete(self, data: st.DataObject) -> None:
            if doc_id := self._pick(data, self.live):
                self.coll.delete_many({"doc_id": doc_id})
                self.live.discard(doc_id)
                self.gone.add(doc_id)

        @rule(data=st.data(), flag=st.sampled_from(["is_deleted", "deleted_at"]))
        def tombstone(self, data: st.DataObject, flag: str) -> None:
            if doc_id := self._pick(data, self.live):
                value = True if flag == "is_deleted" else self._now()
                self.coll.update_one({"doc_id": doc_id}, {"$set": {flag: value, "modified_at": self._now()}})
                self.live.discard(doc_id)
                self.gone.add(doc_id)

        @rule(data=st.data(), body=texts)
        def reinsert(self, data: st.DataObject, body: str) -> None:
            if doc_id := self._pick(data, self.gone):
                self.coll.delete_many({"doc_id": doc_id})  # tombstoned copies too
                self._insert(body + " again", doc_id=doc_id)

        @rule(data=st.data())
        def delete_while_nobody_watches(self, data: st.DataObject) -> None:
            if doc_id := self._pick(data, self.live):
                self.coll.delete_many({"doc_id": doc_id})
                self.live.discard(doc_id)
                self.gone.add(doc_id)
                self.daemon.cursors[document_deletions_sensor.name] = None
                self.needs_sweep = True

        @rule()
        def tick_sensors(self) -> None:
            self.daemon.sync(*SENSORS)
            if not self.needs_sweep:
                self._check()

        @rule()
        def sweep(self) -> None:
            self.daemon.sync(*SENSORS)
            self.daemon.run([sweep_request()])
            self.needs_sweep = False
            self._check()

        def _check(self) -> None:
            version = self.store.control.active_version()
            truth = ground_truth(self.coll, self.store.control.versions()[version])
            assert store_state(self.store, version) == truth

    return SourceFollowsStore


def test_store_follows_any_sequence_of_changes(servers, redis_url, tmp_path, static_dir):
    saved = dict(os.environ)
    try:
        machine = make_machine(servers.mongo_uri, redis_url, str(tmp_path), static_dir)
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=int(os.environ.get("EA_STATEFUL_EXAMPLES", "6")),
                stateful_step_count=10,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
