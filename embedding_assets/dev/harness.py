"""The asset graph run in process, as a backfill, a UI click, a sensor or the schedule would.

For tests, benchmarks and the demo; not used by deployments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import pymongo

from embedding_assets.defs.assets import embedding_assets
from embedding_assets.defs.audit import audit_checks
from embedding_assets.defs.checks import embedding_checks
from embedding_assets.defs.jobs import daily_sweep, store_audit_job
from embedding_assets.defs.partitions import RANGE_END, RANGE_START, SHARDS_TAG, range_tags, shard_partitions
from embedding_assets.defs.resources import build_resources
from embedding_assets.dev import corpus
from embedding_assets.lib.identity import doc_key, refusal
from embedding_assets.lib.text import content_hash, document_text
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.stores.feature_store import FeatureStore

ALL_KEYS = shard_partitions.get_partition_keys()


GRAPH = [*embedding_assets, *embedding_checks, *audit_checks]


def materialize(
    keys: Sequence[str] | None = None, resources: dict | None = None, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    """One run over ``keys`` (default: every shard) with resources read from the environment now."""
    keys = list(keys or ALL_KEYS)
    kwargs: dict = {}
    if len(keys) == 1:
        kwargs["partition_key"] = keys[0]
    else:
        kwargs["tags"] = range_tags(keys)
    return dg.materialize(
        GRAPH,
        resources={**build_resources(), **(resources or {})},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
        **kwargs,
    )


def collection(env: dict[str, str]) -> pymongo.collection.Collection:
    client = pymongo.MongoClient(env["MONGO_URI"], tz_aware=True)
    return client[env["MONGO_DB"]][env["MONGO_COLLECTION"]]


def load_sample(env: dict[str, str], n: int, extra: Sequence[dict] = ()) -> list[dict]:
    docs = list(corpus.generate_documents(n)) + list(extra)
    corpus.load_into(collection(env), docs)
    return docs


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Evaluations by check name (the names are unique across the assets)."""
    evaluations = result.get_asset_check_evaluations()
    by_name = {e.check_name: e for e in evaluations}
    assert len(by_name) == len({(e.asset_key, e.check_name) for e in evaluations}), "check names collide"
    return by_name


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The run's figures of ``asset`` (a partition's materialization carries its shard's figures
    under the usual names and the run's as ``run_<name>``: the run's are returned)."""
    for event in result.get_asset_materialization_events():
        m = event.materialization
        if m.asset_key.to_user_string() == asset:
            figures = {k: v.value for k, v in m.metadata.items()}
            return figures | {k.removeprefix("run_"): v for k, v in figures.items() if k.startswith("run_")}
    raise KeyError(asset)


def shard_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict]:
    """Each materialized partition's own figures of ``asset``."""
    return {
        str(e.materialization.partition): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == asset
    }


def execute(request: dg.RunRequest, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """Run what a sensor or schedule requested, in process."""
    if request.job_name == store_audit_job.name:  # the audit alone, no materialization
        return audit(instance, run_config=request.run_config)
    result = dg.materialize(GRAPH, resources=build_resources(), instance=instance, **run_arguments(request))
    assert result.success
    return result


def run_arguments(request: dg.RunRequest) -> dict:
    """``materialize`` arguments for a requested run: config, selection, partitions, shards."""
    kwargs: dict = {"run_config": request.run_config}
    if request.asset_selection is not None:  # a subset, as the daemon would launch it
        kwargs["selection"] = dg.AssetSelection.assets(
            *request.asset_selection
        ).without_checks() | dg.AssetSelection.checks(*(request.asset_check_keys or []))
    kwargs["tags"] = {t: request.tags[t] for t in (RANGE_START, RANGE_END, SHARDS_TAG) if t in request.tags}
    if RANGE_START not in request.tags:
        kwargs["partition_key"] = request.partition_key
    return kwargs


def audit(instance: dg.DagsterInstance | None = None, **kwargs: object) -> dg.ExecuteInProcessResult:
    """The store audit's checks alone, as the UI's Execute or the audit schedules run them."""
    result = dg.materialize(
        GRAPH,
        selection=dg.AssetSelection.checks(*audit_checks),
        resources=build_resources(),
        instance=instance or dg.DagsterInstance.ephemeral(),
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.success
    return result


class Daemon:
    """Ticks sensors as the Dagster daemon would: cursors kept, each run key launched once."""

    def __init__(self) -> None:
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursors: dict[str, str | None] = {}
        self.launched: set[str] = set()
        self.results: list[dg.ExecuteInProcessResult] = []

    def tick(self, sensor: dg.SensorDefinition) -> list[dg.RunRequest]:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors.get(sensor.name), resources=build_resources()
        ) as context:
            result = sensor(context)
            cursor = context.cursor
        requests: list[dg.RunRequest] = []
        if isinstance(result, dg.SensorResult):
            requests = list(result.run_requests or [])
            cursor = result.cursor if result.cursor is not None else cursor
        self.cursors[sensor.name] = cursor
        return [r for r in requests if r.run_key not in self.launched]

    def run(self, requests: list[dg.RunRequest]) -> None:
        for request in requests:
            self.launched.add(request.run_key)
            self.results.append(execute(request, self.instance))

    def sync(self, *sensors: dg.SensorDefinition, max_rounds: int = 50) -> int:
        """Tick until every sensor is quiet, running what they ask; returns runs launched."""
        launched = 0
        for _ in range(max_rounds):
            requests = [r for s in sensors for r in self.tick(s)]
            if not requests:
                return launched
            self.run(requests)
            launched += len(requests)
        raise AssertionError("sensors never went quiet")


def sweep_request() -> dg.RunRequest:
    """What the daily_sweep schedule requests: one run over every shard."""
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 6, 2, 3, tzinfo=dt.UTC))
    return daily_sweep(context)  # type: ignore[return-value]


def ground_truth(coll: pymongo.collection.Collection, spec: EmbeddingSpec) -> dict[str, tuple[int, int]]:
    """doc_id -> (content hash, modified_at ms) every live document's entry must have,
    computed from the collection alone (not through the pipeline's snapshot step)."""
    latest: dict[str, dict] = {}
    for doc in coll.find({}):
        if doc.get("is_deleted") is True or doc.get("deleted_at") is not None or doc.get("doc_id") is None:
            continue
        if refusal(doc["doc_id"]):
            continue
        key = doc_key(doc["doc_id"])
        if key not in latest or _modified_ms(doc) >= _modified_ms(latest[key]):
            latest[key] = doc
    truth = {}
    for doc_id, doc in latest.items():
        title = doc.get("title") if isinstance(doc.get("title"), str) else None
        body = doc.get("body") if isinstance(doc.get("body"), str) else None
        text = document_text(title, body, spec)
        if not text.skip_reason:
            truth[doc_id] = (content_hash(text.text, spec.tag), _modified_ms(doc))
    return truth


def _modified_ms(doc: dict) -> int:
    """A document's modified_at as entries carry it: unix ms, 0 where it is not a date."""
    when = doc.get("modified_at")
    if not isinstance(when, dt.datetime):
        return 0
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def store_state(store: FeatureStore, version: str) -> dict[str, tuple[int, int]]:
    """doc_id -> (content hash, source ms) of every entry of a version."""
    ids = sorted(store.entries.scan_ids(version))
    headers = store.entries.read_headers(version, ids)
    return {d: (h.content_hash, h.source_ms) for d, h in zip(ids, headers, strict=True) if h is not None}


@dataclass(frozen=True)
class Differences:
    """What a version's entries get wrong against the collection (doc_ids of each kind)."""

    lost: tuple[str, ...]  # a live document with text has no entry
    stale: tuple[str, ...]  # its entry's content hash is not the document's text now
    extra: tuple[str, ...]  # an entry of a document that is gone

    @property
    def none(self) -> bool:
        return not (self.lost or self.stale or self.extra)

    def __str__(self) -> str:
        return f"lost {len(self.lost)}, stale {len(self.stale)}, extra {len(self.extra)}"


def differences(coll: pymongo.collection.Collection, store: FeatureStore, version: str) -> Differences:
    """The store against the collection alone (ground_truth), entry by entry."""
    truth = ground_truth(coll, store.control.versions()[version])
    stored = store_state(store, version)
    return Differences(
        lost=tuple(sorted(truth.keys() - stored.keys())),
        stale=tuple(sorted(d for d in truth.keys() & stored.keys() if truth[d][0] != stored[d][0])),
        extra=tuple(sorted(stored.keys() - truth.keys())),
    )
