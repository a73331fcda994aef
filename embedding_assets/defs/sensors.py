"""Sensors that keep the feature store following the collection, run per affected shard.

Each run request carries only the changed doc_ids; the assets merge them into the shard's
state. Run keys are derived from the cursor position, so a retried tick never double-launches.
"""

import json
import time

import dagster as dg
import polars as pl
from bson import json_util

from embedding_assets.defs.assets import ChangedDocuments
from embedding_assets.defs.jobs import embed_documents
from embedding_assets.defs.partitions import NUM_SHARDS
from embedding_assets.defs.resources import DocumentSourceResource, ShardStateResource
from embedding_assets.lib.change_tracking import ChangeCursor, group_by_shard, run_key
from embedding_assets.lib.sharding import shard_key
from embedding_assets.sources.mongo import ChangeStreamUnavailable

PAGE_SIZE = 2000
MAX_PAGES_PER_TICK = 10
TICK_BUDGET_SECONDS = 20.0  # well inside the default 60 s sensor timeout
NO_SOURCE = "MONGO_URI is not set (`embedding-assets dev` starts embedded servers and sets it)"


def delta_run_requests(kind: str, position: str, doc_ids: list[str]) -> list[dg.RunRequest]:
    """One run per affected shard, carrying exactly that shard's changed doc_ids."""
    requests = []
    for shard, ids in group_by_shard(doc_ids, NUM_SHARDS).items():
        changed = ChangedDocuments(doc_ids=ids)
        requests.append(
            dg.RunRequest(
                run_key=run_key(kind, shard, position, ids),
                partition_key=shard_key(shard, NUM_SHARDS),
                run_config=dg.RunConfig(
                    ops={"document_snapshots": changed, "feature_store_entries": changed}
                ),
                tags={"embedding_assets/trigger": kind, "embedding_assets/documents": str(len(ids))},
            )
        )
    return requests


@dg.sensor(job=embed_documents, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def document_changes_sensor(
    context: dg.SensorEvaluationContext, source: DocumentSourceResource
) -> dg.SensorResult | dg.SkipReason:
    """New and modified documents (tombstones included), by a ``(modified_at, doc_id)`` cursor."""
    if not source.uri:
        return dg.SkipReason(NO_SOURCE)
    docs = source.source()
    cursor = ChangeCursor.parse(context.cursor)
    if cursor is None:
        latest = docs.latest_change()
        if latest is None:
            return dg.SkipReason("the collection has no dated documents yet")
        context.update_cursor(ChangeCursor.of(latest).dump())
        return dg.SkipReason("cursor started at the newest document; backfills cover what came before")
    started = time.monotonic()
    position = cursor.dump()
    changed_ids: list[str] = []
    for _ in range(MAX_PAGES_PER_TICK):
        page = docs.changes_after(cursor.modified_at, cursor.doc_id, PAGE_SIZE)
        if not page:
            break
        cursor = ChangeCursor.of(page[-1])
        changed_ids += [str(d["doc_id"]) for d in page]
        if len(page) < PAGE_SIZE or time.monotonic() - started > TICK_BUDGET_SECONDS:
            break
    if not changed_ids:
        return dg.SkipReason(f"no document modified after {cursor.modified_at.isoformat()}")
    # one run per shard for the whole tick: a delta run rewrites its shard's state, so fewer,
    # larger runs cost less than one per page (at 1M documents a shard is 62,500 rows)
    requests = delta_run_requests("changes", position, list(dict.fromkeys(changed_ids)))
    changed = len(changed_ids)
    context.log.info(f"{changed} changed documents in {len(requests)} shard runs")
    return dg.SensorResult(run_requests=requests, cursor=cursor.dump())


@dg.sensor(job=embed_documents, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def document_deletions_sensor(
    context: dg.SensorEvaluationContext, source: DocumentSourceResource, shard_state: ShardStateResource
) -> dg.SensorResult | dg.SkipReason:
    """Hard deletes, from the MongoDB change stream; the resume token is the cursor."""
    if not source.uri:
        return dg.SkipReason(NO_SOURCE)
    token = json_util.loads(context.cursor) if context.cursor else None
    try:
        deleted, new_token = source.source().deletions_after(
            token, max_events=10_000, max_seconds=TICK_BUDGET_SECONDS
        )
    except ChangeStreamUnavailable as err:
        return dg.SkipReason(
            f"no change stream ({err}); tombstones and the daily reconciliation cover deletions"
        )
    new_cursor = json_util.dumps(new_token) if new_token else context.cursor
    if token is None:
        context.update_cursor(new_cursor)
        return dg.SkipReason("change stream started; deletions from now on are followed")
    doc_ids = doc_ids_of_source_ids(shard_state, deleted)
    if not doc_ids:
        context.update_cursor(new_cursor)
        return dg.SkipReason(f"{len(deleted)} deletions, none of an embedded document")
    position = json.dumps(token, sort_keys=True, default=str)
    return dg.SensorResult(run_requests=delta_run_requests("deletions", position, doc_ids), cursor=new_cursor)


def doc_ids_of_source_ids(shard_state: ShardStateResource, source_ids: list[str]) -> list[str]:
    """A delete event names only ``_id``; the stored snapshots know which doc_id that was."""
    snapshots = shard_state.store().scan("document_snapshots")
    if snapshots is None or not source_ids:
        return []
    found = snapshots.filter(pl.col("source_id").is_in(source_ids)).select("doc_id").collect()
    return sorted(set(found["doc_id"].drop_nulls().to_list()))
