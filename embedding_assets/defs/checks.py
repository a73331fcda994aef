"""Gates on document_vectors: what a run embedded is valid, and few documents failed; and the
version's retrieval quality on feature_store_entries.

The gates read the shards the run stored (``partition_keys`` works in single and ranged runs; a
check executed alone from the UI reads every shard). Blocking: a run whose vectors fail them
publishes nothing. What the store holds is the store audit's (defs/audit.py). The rules are
``lib/audit.py`` and ``lib/quality.py``.
"""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from embedding_assets import settings
from embedding_assets.defs.assets import document_vectors, feature_store_entries
from embedding_assets.defs.check_records import shown_for_latest
from embedding_assets.defs.orphaned_runs import record_run_process
from embedding_assets.defs.partitions import shard_partitions, work_keys
from embedding_assets.defs.resources import FeatureStoreResource, ShardStateResource
from embedding_assets.defs.run_tags import VERSION_TAG
from embedding_assets.lib import audit, quality
from embedding_assets.lib.frames import CHUNK_SCHEMA
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.stores.control_plane import VersionCopy
from embedding_assets.stores.dead_letters import FAILED
from embedding_assets.stores.feature_store import FeatureStore

MAX_ERROR_RATE = float(settings.get("EA_MAX_ERROR_RATE"))
QUALITY_MARGIN = float(settings.get("EA_QUALITY_MARGIN"))
# How far the labeled-set score of the stored vectors may drift from the one recorded at build
# (int8 codes of the same vectors under the same calibration give the same score: any drift is a
# changed calibration or codec).
QUALITY_DRIFT = 0.01


def check_metadata(metadata: dict[str, object]) -> dict[str, object]:
    """Times (``*_at``, epoch seconds in the pure layer) as Dagster timestamps, which the UI shows
    as dates; a time of 0 (none yet) is left out."""
    out: dict[str, object] = {}
    for name, value in metadata.items():
        if name.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
            if value:
                out[name] = dg.MetadataValue.timestamp(float(value))
        else:
            out[name] = value
    return out


def _result(
    context: dg.AssetCheckExecutionContext, outcome: audit.Outcome, check: str, **extra: object
) -> dg.AssetCheckResult:
    return shown_for_latest(
        context,
        dg.AssetCheckResult(
            asset_key=document_vectors.key,
            check_name=check,
            passed=outcome.passed,
            description=outcome.description,
            metadata=check_metadata({**outcome.metadata, **extra}),
            severity=dg.AssetCheckSeverity.ERROR,
        ),
    )


def _run_version(
    context: dg.AssetCheckExecutionContext,
    asset: dg.AssetKey,
    store: FeatureStore,
    shard_state: ShardStateResource,
) -> EmbeddingSpec:
    """The version this run wrote: its run tag (no model load in a check), else the asset's
    latest materialization, else the active version."""
    record_run_process(context)
    run = context.instance.get_run_by_id(context.op_execution_context.run_id)
    tag = run.tags.get(VERSION_TAG) if run else None
    if tag is None:
        event = context.instance.get_latest_materialization_event(asset)
        if event is not None and event.asset_materialization is not None:
            tag = str(event.asset_materialization.metadata["version"].value)
        else:  # executed alone on an instance without history: what readers read
            tag = store.control.active_version()
        if tag is None:
            raise dg.Failure(f"{asset.to_user_string()} has not been materialized yet")
    spec = store.control.versions().get(tag)
    if spec is None:  # the server lost its control keys: the version's copy still says
        copy = shard_state.store().load_version_copy(tag)
        if copy is None:
            raise dg.Failure(f"version {tag} is neither registered in the feature store nor copied")
        spec = VersionCopy.from_json(copy).spec
    return spec


def _keys(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The run's shards; every shard for a check executed on its own (no partitions)."""
    try:
        return work_keys(context.op_execution_context)
    except dg.DagsterInvariantViolationError:
        return shard_partitions.get_partition_keys()


def _chunks(context: dg.AssetCheckExecutionContext, shard_state: ShardStateResource) -> pl.DataFrame:
    """The run's shards as chunked_text stored them: what each document's entry must say."""
    state = shard_state.store()
    columns = ["doc_id", "modified_at", "content_hash", "skip_reason"]  # not the text: 1M rows fit
    frames = [state.load("chunked_text", k, columns) for k in _keys(context)]
    present = [f for f in frames if f is not None]
    return pl.concat(present) if present else CHUNK_SCHEMA.to_frame().select(columns)


def _with_text(chunks: pl.DataFrame) -> pl.DataFrame:
    return chunks.filter(pl.col("skip_reason").is_null() & pl.col("doc_id").is_not_null())


@dg.multi_asset_check(
    name="vector_gates",
    specs=[
        dg.AssetCheckSpec(
            "vector_validity",
            asset=document_vectors,
            blocking=True,
            description="Dimension, finite, unit norm, not constant.",
        ),
        dg.AssetCheckSpec(
            "error_rate",
            asset=document_vectors,
            blocking=True,
            description="Failed documents after retries stay under 0.1%.",
        ),
    ],
    can_subset=True,  # each check has its own Execute in the UI
)
def vector_gates(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> Iterator[dg.AssetCheckResult]:
    """The two gates before publishing, in one step. Dagster orders a downstream step's blocking
    inputs by output name, and single checks all name theirs ``result``: as two checks their
    order, and so the job's snapshot id, changed from one load of the code location to the next."""
    selected = {key.name for key in context.selected_asset_check_keys}
    store = feature_store.store()
    spec = _run_version(context, document_vectors.key, store, shard_state)
    if "vector_validity" in selected:
        state = shard_state.store()
        frames = (state.load("document_vectors", k, ["doc_id", "vector"]) for k in _keys(context))
        outcome = audit.vector_validity((f for f in frames if f is not None), spec.dimension)
        yield _result(context, outcome, check="vector_validity")
    if "error_rate" in selected:
        attempted = set(_with_text(_chunks(context, shard_state))["doc_id"].to_list())
        failed = {d.doc_id for d in store.control.dead_letters(spec.tag).all() if d.kind == FAILED}
        outcome = audit.error_rate(attempted, failed, MAX_ERROR_RATE)
        yield _result(context, outcome, check="error_rate", version=spec.tag)


@dg.asset_check(
    asset=feature_store_entries,
    description=(
        "The version's retrieval quality on the shipped multilingual labeled set, scored on vectors "
        "as stored and decoded by clients: not below its recorded score, nor the active version's "
        "by more than EA_QUALITY_MARGIN."
    ),
)
def retrieval_quality(
    context: dg.AssetCheckExecutionContext,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
) -> dg.AssetCheckResult:
    store = feature_store.store()
    spec = _run_version(context, feature_store_entries.key, store, shard_state)
    recorded = store.control.quality(spec.tag)
    vectors = store.control.quality_vectors(spec.tag)
    if recorded is None or vectors is None:
        return shown_for_latest(
            context,
            dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"version {spec.tag} has no labeled-set record: its next publish records one",
                metadata={"version": spec.tag},
            ),
        )
    labeled = quality.labeled_set()
    passages, queries = vectors[: len(labeled.passage_texts())], vectors[len(labeled.passage_texts()) :]
    calibration = store.control.calibration(spec.tag)
    now = quality.score(quality.as_stored(passages, spec, calibration), queries, labeled)
    active = store.control.active_version()
    active_record = store.control.quality(active) if active and active != spec.tag else None
    problems = []
    if now.score < recorded["score"] - QUALITY_DRIFT:
        problems.append(f"as stored it scores {now.score:.4f}, {recorded['score']:.4f} when built")
    worse = quality.worse_than(now.as_dict(), active_record, QUALITY_MARGIN)
    if worse:
        problems.append(f"worse than the active version {active}: {worse}")
    description = (
        f"labeled set: {now.score:.4f} (same-language MRR {now.same_mrr:.3f}, cross-lingual "
        f"{now.cross_mrr:.3f}) as stored; {recorded['float32_score']:.4f} in float32"
    )
    return shown_for_latest(
        context,
        dg.AssetCheckResult(
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(problems) or description,
            metadata={
                **now.as_dict(),
                "recorded_score": recorded["score"],
                "float32_score": recorded["float32_score"],
                "active_version": active or "",
                "active_score": active_record["score"] if active_record else -1.0,
                "version": spec.tag,
                "labeled_set": labeled.digest,
            },
        ),
    )


embedding_checks = [vector_gates, retrieval_quality]
