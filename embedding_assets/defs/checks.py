"""Asset checks, run-scoped: each evaluates the shards its run materialized.

Run-scoped rather than partition-scoped because a ranged backfill run covers many shards in
one step (``context.partition_key`` raises there); ``partition_keys`` works in both kinds of
run. A check reads the state the run just stored (shard files, Redis headers), not MongoDB,
so a sensor run's checks cost what its shard costs. The rules are ``lib/audit.py``.
"""

import time

import dagster as dg
import polars as pl

from embedding_assets import settings
from embedding_assets.defs.assets import VERSION_TAG, document_vectors, feature_store_entries
from embedding_assets.defs.partitions import NUM_SHARDS
from embedding_assets.defs.resources import FeatureStoreResource, ShardStateResource
from embedding_assets.lib import audit
from embedding_assets.lib.frames import CHUNK_SCHEMA, source_millis
from embedding_assets.lib.publish import orphans_among
from embedding_assets.lib.sharding import shard_index
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.stores.dead_letters import FAILED
from embedding_assets.stores.feature_store import FeatureStore

MAX_ERROR_RATE = float(settings.get("EA_MAX_ERROR_RATE"))


def _result(outcome: audit.Outcome, **extra: object) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata={**outcome.metadata, **extra},
        severity=dg.AssetCheckSeverity.ERROR,
    )


def _run_version(
    context: dg.AssetCheckExecutionContext, asset: dg.AssetKey, store: FeatureStore
) -> EmbeddingSpec:
    """The version this run wrote: its run tag (no model load in a check), else the asset's
    latest materialization."""
    run = context.instance.get_run_by_id(context.op_execution_context.run_id)
    tag = run.tags.get(VERSION_TAG) if run else None
    if tag is None:
        event = context.instance.get_latest_materialization_event(asset)
        if event is None or event.asset_materialization is None:
            raise dg.Failure(f"{asset.to_user_string()} has not been materialized yet")
        tag = str(event.asset_materialization.metadata["version"].value)
    spec = store.control.versions().get(tag)
    if spec is None:
        raise dg.Failure(f"version {tag} is not registered in the feature store")
    return spec


def _keys(context: dg.AssetCheckExecutionContext) -> list[str]:
    return list(context.op_execution_context.partition_keys)


def _chunks(context: dg.AssetCheckExecutionContext, shard_state: ShardStateResource) -> pl.DataFrame:
    """The run's shards as chunked_text stored them: what each document's entry must say."""
    state = shard_state.store()
    columns = ["doc_id", "modified_at", "content_hash", "skip_reason"]  # not the text: 1M rows fit
    frames = [state.load("chunked_text", k, columns) for k in _keys(context)]
    present = [f for f in frames if f is not None]
    return pl.concat(present) if present else CHUNK_SCHEMA.to_frame().select(columns)


def _with_text(chunks: pl.DataFrame) -> pl.DataFrame:
    return chunks.filter(pl.col("skip_reason").is_null() & pl.col("doc_id").is_not_null())


@dg.asset_check(
    asset=document_vectors, blocking=True, description="Dimension, finite, unit norm, not constant."
)
def vector_validity(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    spec = _run_version(context, document_vectors.key, feature_store.store())
    state = shard_state.store()
    frames = (state.load("document_vectors", k, ["doc_id", "vector"]) for k in _keys(context))
    return _result(audit.vector_validity((f for f in frames if f is not None), spec.dimension))


@dg.asset_check(
    asset=document_vectors, blocking=True, description="Failed documents after retries stay under 0.1%."
)
def error_rate(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    store = feature_store.store()
    spec = _run_version(context, document_vectors.key, store)
    attempted = set(_with_text(_chunks(context, shard_state))["doc_id"].to_list())
    failed = {d.doc_id for d in store.control.dead_letters(spec.tag).all() if d.kind == FAILED}
    return _result(audit.error_rate(attempted, failed, MAX_ERROR_RATE), version=spec.tag)


def _published(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> tuple[FeatureStore, EmbeddingSpec, pl.DataFrame, dict]:
    """The store, the version the run published, the run's documents that have text, and
    their entries' headers."""
    store = feature_store.store()
    spec = _run_version(context, feature_store_entries.key, store)
    rows = _with_text(_chunks(context, shard_state))
    ids = rows["doc_id"].to_list()
    headers = dict(zip(ids, store.entries.read_headers(spec.tag, ids), strict=True))
    return store, spec, rows, headers


@dg.asset_check(asset=feature_store_entries, description="Every document with text has a current entry.")
def coverage(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    store, spec, rows, headers = _published(context, feature_store, shard_state)
    expected = dict(zip(rows["doc_id"].to_list(), rows["content_hash"].to_list(), strict=True))
    outcome = audit.coverage(expected, headers, spec.version_id)
    return _result(outcome, version=spec.tag, active=spec.tag == store.control.active_version())


@dg.asset_check(
    asset=feature_store_entries, description="Under 1% of entries older than their document or 24h."
)
def staleness(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    _, spec, rows, headers = _published(context, feature_store, shard_state)
    expected = dict(
        zip(
            rows["doc_id"].to_list(),
            zip(rows["content_hash"].to_list(), source_millis(rows), strict=True),
            strict=True,
        )
    )
    return _result(audit.staleness(expected, headers, now=int(time.time())), version=spec.tag)


@dg.asset_check(asset=feature_store_entries, description="No entries for documents that no longer exist.")
def orphans(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    store = feature_store.store()
    spec = _run_version(context, feature_store_entries.key, store)
    live = set(_with_text(_chunks(context, shard_state))["doc_id"].to_list())
    ops = context.op_execution_context.run_config.get("ops", {})
    requested = ops.get("feature_store_entries", {}).get("config", {}).get("doc_ids") or []
    shards = {shard_index(k) for k in _keys(context)}
    # a delta run: the documents it was told about; a full run: every stored entry of its shards
    candidates = requested or store.entries.scan_ids(spec.tag)
    gone = orphans_among(candidates, live, shards, NUM_SHARDS)
    found = [d for d, h in zip(gone, store.entries.read_headers(spec.tag, gone), strict=True) if h]
    scope = f"{len(requested)} changed documents" if requested else f"{len(shards)} shards"
    return _result(audit.orphans(found, scope))


embedding_checks = [vector_validity, error_rate, coverage, staleness, orphans]
