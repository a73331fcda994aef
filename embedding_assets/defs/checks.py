"""Asset checks, run-scoped: each evaluates the shards its run materialized.

Run-scoped rather than partition-scoped because a ranged backfill run covers many shards in
one step (``context.partition_key`` raises there); ``partition_keys`` works in both kinds of
run. A check reads the state the run just stored (Parquet shards, Redis headers), not MongoDB,
so a sensor run's checks cost what its shard costs. See docs/checks.md.
"""

import os
import time

import dagster as dg
import polars as pl

from embedding_assets.defs.assets import document_vectors, feature_store_entries
from embedding_assets.defs.partitions import NUM_SHARDS
from embedding_assets.defs.resources import FeatureStoreResource, ShardStateResource
from embedding_assets.lib import checks, pipeline
from embedding_assets.lib.dead_letters import FAILED, DeadLetters
from embedding_assets.lib.feature_store import FeatureStore
from embedding_assets.lib.sharding import shard_index
from embedding_assets.lib.versioning import EmbeddingSpec

MAX_ERROR_RATE = float(os.environ.get("EA_MAX_ERROR_RATE", "0.001"))


def _result(outcome: checks.Outcome, **extra: object) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata={**outcome.metadata, **extra},
        severity=dg.AssetCheckSeverity.ERROR,
    )


def _run_version(
    context: dg.AssetCheckExecutionContext, asset: dg.AssetKey, store: FeatureStore
) -> EmbeddingSpec:
    """The version this run wrote, from its materialization (no model load in a check)."""
    event = context.instance.get_latest_materialization_event(asset)
    assert event is not None and event.asset_materialization is not None
    tag = event.asset_materialization.metadata["version"].value
    spec = store.versions().get(str(tag))
    if spec is None:
        raise dg.Failure(f"version {tag} is not registered in the feature store")
    return spec


def _chunks(context: dg.AssetCheckExecutionContext, shard_state: ShardStateResource) -> pl.DataFrame:
    """The run's shards as chunked_text stored them: what each document's entry must say."""
    state = shard_state.store()
    columns = ["doc_id", "modified_at", "content_hash", "skip_reason"]  # not the text: 1M rows fit
    frames = [state.load("chunked_text", k, columns) for k in context.op_execution_context.partition_keys]
    present = [f for f in frames if f is not None]
    return pl.concat(present) if present else pipeline.CHUNK_SCHEMA.to_frame().select(columns)


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
    frames = (  # one shard in memory at a time
        state.load("document_vectors", k, ["doc_id", "vector"])
        for k in context.op_execution_context.partition_keys
    )
    return _result(checks.vector_validity((f for f in frames if f is not None), spec.dimension))


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
    failed = {d.doc_id for d in DeadLetters(store.client, spec.tag).all() if d.kind == FAILED}
    return _result(checks.error_rate(attempted, failed, MAX_ERROR_RATE), version=spec.tag)


def _headers(store: FeatureStore, spec: EmbeddingSpec, ids: list[str]) -> dict:
    return dict(zip(ids, store.read_headers(spec.tag, ids), strict=True))


def _published(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> tuple[FeatureStore, EmbeddingSpec, pl.DataFrame]:
    """The store, the version the run published, and the run's documents that have text."""
    store = feature_store.store()
    spec = _run_version(context, feature_store_entries.key, store)
    return store, spec, _with_text(_chunks(context, shard_state))


@dg.asset_check(asset=feature_store_entries, description="Every document with text has a current entry.")
def coverage(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    store, spec, rows = _published(context, feature_store, shard_state)
    expected = dict(zip(rows["doc_id"].to_list(), rows["content_hash"].to_list(), strict=True))
    outcome = checks.coverage(expected, _headers(store, spec, sorted(expected)), spec.version_id)
    return _result(outcome, version=spec.tag, active=spec.tag == store.active_version())


@dg.asset_check(
    asset=feature_store_entries, description="Under 1% of entries older than their document or 24h."
)
def staleness(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    store, spec, rows = _published(context, feature_store, shard_state)
    expected = dict(
        zip(
            rows["doc_id"].to_list(),
            zip(rows["content_hash"].to_list(), pipeline.source_millis(rows), strict=True),
            strict=True,
        )
    )
    outcome = checks.staleness(expected, _headers(store, spec, sorted(expected)), now=int(time.time()))
    return _result(outcome, version=spec.tag)


@dg.asset_check(asset=feature_store_entries, description="No entries for documents that no longer exist.")
def orphans(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    store, spec, rows = _published(context, feature_store, shard_state)
    live = set(rows["doc_id"].to_list())
    ops = context.op_execution_context.run_config.get("ops", {})
    requested = ops.get("feature_store_entries", {}).get("config", {}).get("doc_ids") or []
    if requested:  # a delta run: the documents it was told about
        gone = [d for d in requested if d not in live]
        found = [d for d, h in _headers(store, spec, gone).items() if h is not None]
        return _result(checks.orphans(found, f"{len(requested)} changed documents"))
    shards = {shard_index(k) for k in context.op_execution_context.partition_keys}
    found = pipeline.orphans(store, spec.tag, shards, NUM_SHARDS, live)
    return _result(checks.orphans(found, f"{len(shards)} shards"))


embedding_checks = [vector_validity, error_rate, coverage, staleness, orphans]
