"""Sensors that keep the feature store following the collection: each tick, one run per contiguous
range of the shards its changes fall in.

Each run request carries only the changed doc_ids; the assets merge them into the shard's
state. Run keys are derived from the cursor position, so a retried tick never double-launches.
"""

import datetime as dt
import json
import time
from dataclasses import replace

import dagster as dg
from bson import json_util

from embedding_assets import settings
from embedding_assets.defs.assets import ChangedDocuments, embedding_assets
from embedding_assets.defs.jobs import TRIGGER_TAG, audit_request, embed_documents, store_audit_job
from embedding_assets.defs.partitions import NUM_SHARDS, delta_tags, shard_partitions
from embedding_assets.defs.resources import DocumentSourceResource, ShardStateResource
from embedding_assets.lib.change_tracking import (
    ChangeCursor,
    early_changes,
    future_digest,
    group_by_shard,
    run_key,
    shard_runs,
)
from embedding_assets.lib.identity import doc_key, refusal
from embedding_assets.lib.sharding import shard_key
from embedding_assets.sources.mongo import ChangeStreamUnavailable

SENSOR_SECONDS = settings.sensor_seconds()
# Dagster's sensor daemon evaluates the sensors that are due once per loop of at least 5 s
# (dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME); a sensor is due once its last tick *started*
# minimum_interval_seconds ago. Tick starts drift by the evaluations before them in the loop (0.1 to
# 1.5 s), so an interval equal to the loop's skipped every other loop at random: the latency
# benchmark saw ticks 9 to 11 s apart half the time with 5.
TICK_JITTER_SECONDS = 2


def minimum_interval(seconds: int) -> int:
    """The minimum interval that ticks every ``seconds`` under the daemon's loop: a little less,
    so that a tick starting late in one loop does not make the next loop skip the sensor. Under
    the loop's 5 s, every loop."""
    return max(1, seconds - TICK_JITTER_SECONDS)


PAGE_SIZE = 2000
MAX_PAGES_PER_TICK = 10
TICK_BUDGET_SECONDS = 20.0  # well inside the default 60 s sensor timeout
# Writers stamp modified_at a moment before their write is visible: the cursor stays this far
# behind the present so that it never passes a document still being committed.
SETTLE_SECONDS = 5
# Documents inside the settle window requested at once (lib/change_tracking.early_changes); more
# than this in 5 s is a bulk load, which waits for the cursor.
EARLY_LIMIT = 500
REPAIR_WINDOW = dt.timedelta(days=1)
FUTURE_LIMIT = 1000  # future-dated documents followed per tick (data errors: a few at most)
# Dated less than this ahead is writers' clock skew, not an error: such documents wait for the
# cursor (seconds), and are not requested twice, once as future-dated and again by the cursor.
SKEW_SECONDS = 120
DELTA_MAX_RUNTIME_SECONDS = 1800
NO_SOURCE = "MONGO_URI is not set (`embedding-assets dev` starts embedded servers and sets it)"


# Runs of one sensor executing at once before it holds back: each pays a process start, and a
# change or repair run a model load; more of them than cores only slows every one (the soak
# measured 4 at once on 2 cores taking 30 to 100 s each for a few documents). Counted per sensor,
# so that a stream of deletions never starves the changes.
MAX_DELTA_RUNS_IN_FLIGHT = 2


# Which waiting run the queue starts first (Dagster's ``dagster/priority`` tag; backfills and the
# daily sweep keep the default 0): a deletion run loads no model and takes seconds, and a document
# deleted in MongoDB but still served is the worse error, so deletions go before changes; both go
# before whole-collection runs, which take minutes to hours either way.
RUN_PRIORITY = {"deletions": 2, "changes": 1, "repair": 1}


def runs_waiting(instance: dg.DagsterInstance, trigger: str) -> int:
    """This trigger's pipeline runs queued or starting, or its delta runs executing at the limit
    (MAX_DELTA_RUNS_IN_FLIGHT): while there are any, the sensor launches nothing more.

    Backpressure: a run costs a process start and often a model load whatever its size, so when
    runs queue up, more small runs only lengthen the queue. The cursors stay where they are and the
    next tick after the queue drains takes every change since, in one larger run. Counted per
    trigger: deletions never wait for change runs to leave the queue, nor changes for deletions.
    """
    mine = {TRIGGER_TAG: trigger}
    waiting = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
    queued = instance.get_runs_count(
        dg.RunsFilter(job_name=embed_documents.name, statuses=waiting, tags=mine)
    )
    if queued:
        return queued
    executing = instance.get_runs_count(
        dg.RunsFilter(job_name=embed_documents.name, statuses=[dg.DagsterRunStatus.STARTED], tags=mine)
    )
    return executing if executing >= MAX_DELTA_RUNS_IN_FLIGHT else 0


def delta_run_requests(
    kind: str, position: str, doc_ids: list[str], job_name: str | None = None
) -> list[dg.RunRequest]:
    """Runs for the tick's changes, each over a contiguous range of the shards they fall in.

    Few runs, not one per shard: each run pays a process start and a model load, which is most of
    a small delta's time (its steps execute in that one process, the in-process executor). But a
    run records a materialization for every shard of its range, so changes in shards 00 and 13
    are two runs (lib/change_tracking.shard_runs), never one over 00-13: a shard nothing changed
    gets no materialization.
    """
    if not doc_ids:
        return []
    by_shard = group_by_shard(doc_ids, NUM_SHARDS)
    requests = []
    for shards in shard_runs(by_shard):
        ids = [d for shard in shards for d in by_shard[shard]]
        changed = ChangedDocuments(doc_ids=ids)
        requests.append(
            dg.RunRequest(
                run_key=run_key(kind, shards, position, ids),
                partition_key=shard_key(shards[0], NUM_SHARDS) if len(shards) == 1 else None,
                run_config=dg.RunConfig(ops={asset.key.path[-1]: changed for asset in embedding_assets}),
                # no asset or check selection: the whole job (its four assets, the gates, and the
                # store audit of the run's own documents with the last store-wide audit carried
                # beside them, defs/audit.py). A selection, even of everything, makes a subset job
                # with a snapshot id of its own: the UI showed the job's snapshot changing.
                tags={
                    **delta_tags(shards),
                    # a delta takes seconds to minutes: past this its process is dead or hung, and
                    # run monitoring fails it so that run retries launch it again (dagster.yaml)
                    "dagster/max_runtime": str(DELTA_MAX_RUNTIME_SECONDS),
                    TRIGGER_TAG: kind,
                    "dagster/priority": str(RUN_PRIORITY.get(kind, 0)),
                    "embedding_assets/documents": str(len(ids)),
                },
                job_name=job_name,
            )
        )
    return requests


@dg.sensor(
    job=embed_documents,
    minimum_interval_seconds=minimum_interval(SENSOR_SECONDS),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def document_changes_sensor(
    context: dg.SensorEvaluationContext, source: DocumentSourceResource, shard_state: ShardStateResource
) -> dg.SensorResult | dg.SkipReason:
    """New and modified documents (tombstones included), by a ``(modified_at, doc_id)`` cursor that
    never passes the present; documents dated in the future are followed apart."""
    if not source.uri:
        return dg.SkipReason(NO_SOURCE)
    waiting = runs_waiting(context.instance, "changes")
    if waiting:
        return dg.SkipReason(f"{waiting} runs wait or run; changes gather for the next run")
    docs = source.source()
    now = dt.datetime.now(dt.UTC)
    until = now - dt.timedelta(seconds=SETTLE_SECONDS)
    ahead = now + dt.timedelta(seconds=SKEW_SECONDS)
    cursor = ChangeCursor.parse(context.cursor)
    if cursor is None:
        latest = docs.latest_change(until)
        start = ChangeCursor.of(latest) if latest else ChangeCursor(until, None)
        future = future_digest(docs.dated_after(ahead, FUTURE_LIMIT))
        context.update_cursor(replace(start, future=future).dump())
        return dg.SkipReason("cursor started at the newest document; backfills cover what came before")
    if cursor.modified_at > until:  # pinned in the future (an earlier release let a cursor get there)
        context.log.warning(
            f"cursor at {cursor.modified_at.isoformat()} is in the future; re-reading the last day"
        )
        cursor = ChangeCursor(until - REPAIR_WINDOW, None, cursor.future)
    started = time.monotonic()
    position = cursor.dump()
    requested_early = cursor.early
    changed: list[dict] = []
    caught_up = False
    for _ in range(MAX_PAGES_PER_TICK):
        page = docs.changes_after(cursor.modified_at, cursor.doc_id, PAGE_SIZE, until)
        if page:
            cursor = replace(ChangeCursor.of(page[-1]), future=cursor.future)
            changed += page
        if len(page) < PAGE_SIZE:
            caught_up = True
            break
        if time.monotonic() - started > TICK_BUDGET_SECONDS:
            break
    # edits already visible inside the settle window go now; the cursor still waits for them
    unsettled = docs.changes_after(until, None, EARLY_LIMIT, now) if caught_up else []
    changed, early = early_changes(requested_early, changed, unsettled, EARLY_LIMIT)
    cursor = replace(cursor, early=early)
    future = docs.dated_after(ahead, FUTURE_LIMIT)
    if future_digest(future) != cursor.future:  # a future-dated document came, went or changed
        changed += future
        cursor = replace(cursor, future=future_digest(future))
    # a refused doc_id (an array, say) gets no entry: full runs record why, delta runs skip it
    ids = [doc_key(d["doc_id"]) for d in changed if not refusal(d["doc_id"])]
    ids += renamed_from(shard_state, changed)
    if not ids:
        context.update_cursor(cursor.dump())
        return dg.SkipReason(f"no document modified after {cursor.modified_at.isoformat()}")
    # few runs for the whole tick: fewer, larger runs cost less than one per page or per shard
    requests = delta_run_requests("changes", position, list(dict.fromkeys(ids)))
    context.log.info(f"{len(ids)} changed documents, in {len(requests)} runs")
    return dg.SensorResult(run_requests=requests, cursor=cursor.dump())


def renamed_from(shard_state: ShardStateResource, docs: list[dict]) -> list[str]:
    """The doc_ids these documents (by ``_id``) were stored under before, where different: a
    doc_id renamed in place leaves its old entry to remove."""
    current = {str(d["_id"]): doc_key(d["doc_id"]) for d in docs if d.get("_id") is not None}
    if not current:
        return []
    stored = shard_state.store().find(
        "document_snapshots", "source_id", list(current), ["source_id", "doc_id"]
    )
    return sorted(
        {old for source_id, old in stored.iter_rows() if old is not None and old != current[source_id]}
    )


@dg.sensor(
    jobs=[embed_documents, store_audit_job],
    minimum_interval_seconds=minimum_interval(SENSOR_SECONDS),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def document_deletions_sensor(
    context: dg.SensorEvaluationContext, source: DocumentSourceResource, shard_state: ShardStateResource
) -> dg.SensorResult | dg.SkipReason:
    """Hard deletes, from the MongoDB change stream; the resume token is the cursor."""
    if not source.uri:
        return dg.SkipReason(NO_SOURCE)
    token = json_util.loads(context.cursor) if context.cursor else None
    waiting = runs_waiting(context.instance, "deletions")
    if waiting and token is not None:  # the stream keeps its place (its history covers minutes)
        return dg.SkipReason(f"{waiting} runs wait or run; deletions gather for the next run")
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
    doc_ids, unknown = doc_ids_of_source_ids(shard_state, deleted)
    position = json.dumps(token, sort_keys=True, default=str)
    requests = delta_run_requests("deletions", position, doc_ids, job_name=embed_documents.name)
    unscanned = shard_state.store().unscanned(shard_partitions.get_partition_keys()) if unknown else []
    if unscanned:
        # The state cannot say which doc_ids these were (its folder was lost, say): the full
        # audit finds every entry without a document and the repair sensor deletes them.
        # One audit per 10 minutes at most, however many deletions come.
        bucket = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        bucket -= dt.timedelta(minutes=bucket.minute % 10)
        requests.append(audit_request("full", f"audit-full:unknown-deletions:{bucket:%Y-%m-%dT%H:%M}"))
        context.log.warning(
            f"{unknown} deleted documents unknown to the shard state ({len(unscanned)} shards never "
            "fully scanned): a full audit finds their entries"
        )
    if not requests:
        context.update_cursor(new_cursor)
        return dg.SkipReason(f"{len(deleted)} deletions, none of an embedded document")
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


def doc_ids_of_source_ids(shard_state: ShardStateResource, source_ids: list[str]) -> tuple[list[str], int]:
    """A delete event names only ``_id``; the stored snapshots know which doc_id that was.
    Returns those doc_ids and how many ``_id``s the snapshots do not know."""
    if not source_ids:
        return [], 0
    found = shard_state.store().find("document_snapshots", "source_id", source_ids, ["source_id", "doc_id"])
    known = set(found["source_id"].to_list())
    return sorted(set(found["doc_id"].drop_nulls().to_list())), len(set(source_ids) - known)
