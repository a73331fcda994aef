"""The asset graph: document_snapshots -> chunked_text -> document_vectors -> feature_store_entries.

Every asset is partitioned by shard. A run either covers its shards fully (backfills, the
daily sweep: MongoDB is scanned once, entries nobody deleted are reconciled) or carries the
doc_ids a sensor saw change, which each asset merges into its shard's stored state. Work
whose content hash did not change is reused, never redone.

The intermediate assets' shards live in the shard-state store (``ShardStateResource``), their
only owner: each asset reads its upstream's shards there and writes its own as soon as each is
done, so a run over every shard holds one shard at a time. Assets return ``MaterializeResult``.
"""

import datetime as dt
import functools
import time
import warnings
from collections.abc import Callable, Iterator

import dagster as dg
import numpy as np
import polars as pl

from embedding_assets.audit import early_sample
from embedding_assets.defs.active_follower import follow_active_version
from embedding_assets.defs.audit_config import sampled_audit_follows
from embedding_assets.defs.orphaned_runs import record_run_process
from embedding_assets.defs.partitions import (
    NUM_SHARDS,
    backfill_policy,
    run_shards,
    shard_partitions,
    work_keys,
)
from embedding_assets.defs.publish_guards import (
    calibrate_model,
    eviction_policy,
    labeled_vectors,
    record_quality,
    verify_model,
)
from embedding_assets.defs.refusals import fail_once_on_refusal
from embedding_assets.defs.resources import (
    DocumentSourceResource,
    EmbeddingModelResource,
    FeatureStoreResource,
    ShardStateResource,
)
from embedding_assets.defs.run_tags import READ_TAG, read_time, run_materializes, run_spec, stamp_version
from embedding_assets.defs.step_figures import Written, rate, reason_table, shard_figures
from embedding_assets.embedders.for_version import source_of
from embedding_assets.lib import publish, quality, snapshot
from embedding_assets.lib.chunk import chunk_frame
from embedding_assets.lib.embed import vector_frame
from embedding_assets.lib.frames import compatible, conform, dead_letter_id, split_own, vector_schema
from embedding_assets.lib.identity import doc_key
from embedding_assets.lib.merge import TOMBSTONE_RETENTION, tombstones
from embedding_assets.lib.ordered_map import ordered_map
from embedding_assets.lib.sharding import shard_key, shard_of
from embedding_assets.lib.vectors import split_invalid
from embedding_assets.process_memory import release_freed_memory
from embedding_assets.stores.control_plane import (
    ControlPlaneConflict,
    VersionCopy,
)
from embedding_assets.stores.dead_letters import FAILED, REJECTED, WARNING, DeadLetters
from embedding_assets.stores.shard_state import ShardSpool, ShardStateStore

# single_run backfills make a whole-collection backfill one MongoDB scan; multi_run, parallel runs.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

# No pools: runs at once are bounded by the run queue (max_concurrent_runs, sized to the embedding
# service), and correctness rests on per-shard locks and merges (lib/merge.py, stores/locks.py).
# Pools on PostgreSQL also crash runs that initialize a pool at once or after its default limit
# changed (dagster-io/dagster#33552): a parallel backfill's first runs did, here.
_COMMON = dict(
    partitions_def=shard_partitions,
    backfill_policy=backfill_policy(),
    group_name="embeddings",
    # whole-step retries for what the in-step retries could not ride out
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
)


PROGRESS_SECONDS = 5.0
PUBLISH_THREADS = 3  # feature_store_entries says why
# Rows the run's shards hold, at least, before the embedding step hands freed memory back
RELEASE_AFTER_ROWS = 20_000
# The model's preload starts this long after the snapshot's scan is asked for: the tokenizer's
# load holds the interpreter for a second, and started first it held back the request itself
# (docs/benchmarks.md). The server then takes 1.5 s or more to build a 100k scan's first page.
PRELOAD_AFTER_SECONDS = 0.05


class ChangedDocuments(dg.Config):
    """doc_ids a sensor saw added, modified or deleted; empty means the whole shard."""

    doc_ids: list[str] = []


@dg.asset(kinds={"mongodb", "polars"}, **_COMMON)
@fail_once_on_refusal
def document_snapshots(
    context: dg.AssetExecutionContext,
    config: ChangedDocuments,
    source: DocumentSourceResource,
    shard_state: ShardStateResource,
    feature_store: FeatureStoreResource,
    embedding_model: EmbeddingModelResource,
) -> dg.MaterializeResult:
    """The shard's live documents as they are in MongoDB: ids, text fields, language, timestamps."""
    record_run_process(context)
    started = time.perf_counter()
    # on the feature store's clock: entries' computed_at is on it too (lib/staleness.py)
    read_started = dt.datetime.fromtimestamp(feature_store.store().entries.server_time(), dt.UTC)
    context.instance.add_run_tags(context.run.run_id, {READ_TAG: str(int(read_started.timestamp()))})
    shards = run_shards(context)
    state = shard_state.store()
    written = Written(context, state, "document_snapshots")
    unusable = 0
    if not config.doc_ids:
        # the model loads beside the scan, from just after the scan is asked for
        preload = (
            functools.partial(embedding_model.preload_in_background, after_seconds=PRELOAD_AFTER_SECONDS)
            if run_materializes(context, document_vectors.key)
            else None
        )
        docs = source.source().iter_shards(shards, NUM_SHARDS, requesting=preload)
        spool = ShardSpool(state, "document_snapshots")
        for s, frame in snapshot.snapshot_shards(docs, shards, spool, read_started):
            # one shard in memory at a time; what a later read stored meanwhile stays
            written.save_snapshot(shard_key(s, NUM_SHARDS), frame, scanned_at=read_started)
            unusable += frame["doc_id"].null_count()
        spool.clear()
        return written.result(
            documents_per_second=rate(written.rows, started),
            failures=unusable,
            shards=len(shards),
            mode="full",
        )

    found = source.source().iter_by_ids(config.doc_ids)
    fetched = snapshot.snapshot_frames(
        ((shard_of(doc_key(d["doc_id"]), NUM_SHARDS), d) for d in found),
        range(NUM_SHARDS),
        read_started,
    )
    upserted = deleted = 0
    for s in shards:
        requested = [d for d in config.doc_ids if shard_of(d, NUM_SHARDS) == s]
        rows = fetched[s].filter(pl.col("doc_id").is_in(requested))
        gone = sorted(set(requested) - set(rows["doc_id"].to_list()))
        written.save_snapshot(shard_key(s, NUM_SHARDS), rows, tombstones(gone, read_started))
        written.shard(shard_key(s, NUM_SHARDS), upserted=rows.height, deleted=len(gone))
        upserted += rows.height
        deleted += len(gone)
    return written.result(
        requested=len(config.doc_ids),
        upserted=upserted,
        deleted=deleted,
        documents_per_second=rate(len(config.doc_ids), started),
        failures=unusable,
        mode="delta",
    )


@dg.asset(deps=[document_snapshots], kinds={"polars"}, **_COMMON)
@fail_once_on_refusal
def chunked_text(
    context: dg.AssetExecutionContext,
    config: ChangedDocuments,
    embedding_model: EmbeddingModelResource,
    shard_state: ShardStateResource,
    feature_store: FeatureStoreResource,
) -> dg.MaterializeResult:
    """Token-window chunks per document, cut with the model's own tokenizer; skips say why.

    Documents that cannot be embedded are dead-lettered as rejected, repaired ones as warnings.
    """
    record_run_process(context)
    plan = embedding_model.chunk_plan()
    stamp_version(context, plan.spec)
    # the tokenizer alone, no weights (and none at all for whole-document embedders)
    tokenizer = None if plan.single_chunk else embedding_model.embedder().tokenizer
    state = shard_state.store()
    started = time.perf_counter()
    written = Written(context, state, "chunked_text")
    totals = {"reused": 0, "chunks": 0, "tokens": 0}
    skipped: list[pl.DataFrame] = []
    letters = feature_store.store().control.dead_letters(plan.spec.tag)
    for key in work_keys(context):
        previous = state.load("chunked_text", key)
        # a delta run chunks its own documents; the others' rows stay as stored (lib/frames.py)
        own, carried = split_own(_upstream(state, "document_snapshots", key), previous, config.doc_ids)
        frame, reused_ids = chunk_frame(own, tokenizer, plan, previous=previous)
        if carried is not None:
            frame = pl.concat([conform(carried, frame.schema), frame])
            reused_ids = [*reused_ids, *carried["doc_id"].to_list()]
        written.save_derived(key, frame)
        totals["reused"] += len(reused_ids)
        totals["chunks"] += int(frame["chunks"].list.len().sum() or 0)
        totals["tokens"] += int(frame["n_tokens"].sum() or 0)
        skipped.append(frame.filter(pl.col("skip_reason").is_not_null()).select("doc_id", "skip_reason"))
        written.shard(key, reused=len(reused_ids), skipped=skipped[-1].height)
        _record_input_problems(letters, frame.filter(~pl.col("doc_id").is_in(reused_ids).fill_null(False)))
    skipped_rows = (
        pl.concat(skipped)
        if skipped
        else pl.DataFrame(schema={"doc_id": pl.String, "skip_reason": pl.String})
    )
    return written.result(
        chunked=written.rows - totals["reused"] - skipped_rows.height,
        skipped=skipped_rows.height,
        failures=skipped_rows.height,
        skip_reasons=dg.MetadataValue.md(reason_table(skipped_rows)),
        documents_per_second=rate(written.rows, started),
        version=plan.spec.tag,
        **totals,
    )


@dg.asset(deps=[chunked_text], kinds={"pytorch", "polars"}, **_COMMON)
@fail_once_on_refusal
def document_vectors(
    context: dg.AssetExecutionContext,
    config: ChangedDocuments,
    embedding_model: EmbeddingModelResource,
    shard_state: ShardStateResource,
    feature_store: FeatureStoreResource,
    source: DocumentSourceResource,
) -> dg.MaterializeResult:
    """Chunk vectors from the embedder, pooled into one unit vector per document."""
    record_run_process(context)
    spec = run_spec(context, embedding_model)
    embedder = embedding_model.embedder()
    state = shard_state.store()
    started = time.perf_counter()
    model_loaded = False
    # a sampled audit after this run's publish: its scan opens as the embedding ends (below)
    publishes = run_materializes(context, dg.AssetKey("feature_store_entries"))
    audit_sample = None if config.doc_ids or not publishes else sampled_audit_follows(context)
    documents = source.source() if audit_sample else None
    # what the server takes to open a scan, as this run's snapshot measured it. None where it did
    # not run in this process, or where the source's kind is not known without asking it: opening
    # the sample never makes the embedding wait on MongoDB, nor on Redis (the store's clock is
    # read here, as the step begins, and followed by this process's)
    scan_opening = None
    if documents is not None and documents.samples_by_scanning(ask=False) is not None:
        scan_opening = documents.scan_opening_seconds()
    store_clock = feature_store.store().entries.server_time() - time.time() if scan_opening else 0.0

    def load_model() -> None:
        """The weights, once and only when a document needs them: deletions and metadata-only
        edits (most sensor runs) never import torch. The rate counts from after the load."""
        nonlocal started, model_loaded
        if not model_loaded:
            load_started = time.perf_counter()
            # what the earlier steps freed goes back to the system before the model lands on it:
            # 70-120 MB off a 100k static run's peak in alternating runs (docs/benchmarks.md).
            # Not after a few thousand rows: they freed little, and the full collection costs
            # 0.1 to 0.7 s in a process holding Dagster's definitions, a change run's to pay
            if total >= RELEASE_AFTER_ROWS:
                release_freed_memory()
            embedder.encode(["warm up"])
            started += time.perf_counter() - load_started
            model_loaded = True

    total = sum(
        _upstream(state, "chunked_text", k, ["skip_reason"])["skip_reason"].null_count()
        for k in work_keys(context)
    )
    done = {"n": 0, "logged": 0.0}

    def open_audit_sample(embedded: int, now: float) -> None:
        """The audit's sample scan opens, held, when what is left to embed (at most ``total``
        less what is done: reused documents count as left) takes about what the server takes to
        open it, so that the server builds it while the embedding ends (audit/early_sample.py)."""
        nonlocal scan_opening
        left = (total - embedded) * (now - started) / max(embedded, 1)
        if documents is not None and early_sample.opens_now(left, scan_opening):
            scan_opening = None  # once
            read_at = int(time.time() + store_clock) - 1  # at or before the scan's start
            early_sample.start(context.run.run_id, documents, audit_sample, read_at, held=True)

    def progress_of(key: str) -> Callable[[int, int], None]:
        """Progress over what the shard has to embed (its changed documents, not its reused ones):
        a line per PROGRESS_SECONDS and the shard's last, not one per batch (each is an event the
        instance stores; a fast model finishes hundreds of batches a minute)."""

        def report(shard_done: int, shard_todo: int) -> None:
            now = time.perf_counter()
            open_audit_sample(done["n"] + shard_done, now)
            if shard_done < shard_todo and now - done["logged"] < PROGRESS_SECONDS:
                return
            done["logged"] = now
            speed = (done["n"] + shard_done) / max(now - started, 1e-9)
            eta = (shard_todo - shard_done) / speed if speed else float("inf")
            context.log.info(
                f"{key}: embedded {shard_done}/{shard_todo} new or changed documents, {speed:.1f}/s, "
                f"ETA {eta:.0f}s"
            )

        return report

    written = Written(context, state, "document_vectors")
    chunks = 0
    control = feature_store.store().control
    control.register_version(spec, layout=False)  # checks read it before publishing
    control.set_query_model(spec.tag, source_of(embedder))  # where clients load it for queries
    verify_model(context, embedder, control, state, spec)
    calibrate_model(context, embedder, control, state, spec, lambda: calibration_windows(state, context))
    letters = control.dead_letters(spec.tag)
    previously_failed = {d.doc_id for d in letters.all() if d.kind == FAILED}
    failed: list[tuple[str, str]] = []
    embedded = model_failures = 0
    schema = vector_schema(embedder.dimension)
    for key in work_keys(context):
        previous = compatible(state.load_with_checkpoints("document_vectors", key), schema)
        # a delta run embeds its own documents; the others' vectors stay as stored (lib/frames.py)
        own, carried = split_own(_upstream(state, "chunked_text", key), previous, config.doc_ids)
        result = vector_frame(
            own,
            embedder,
            retry_seconds=embedding_model.retry_seconds,
            previous=previous,
            docs_per_batch=embedding_model.docs_per_batch(),
            progress=progress_of(key),
            checkpoint=lambda part, key=key: state.save_checkpoint("document_vectors", key, part),
            checkpoint_seconds=embedding_model.checkpoint_seconds,
            before_embedding=load_model,
            pooling=spec.pooling,
        )
        frame = result.frame if carried is None else pl.concat([carried, result.frame]).sort("doc_id")
        valid, bad = split_invalid(frame)
        written.save_derived(key, valid)
        state.clear_checkpoints("document_vectors", key)  # the shard is stored whole
        chunks += int(valid["n_chunks"].sum() or 0)
        shard_failures = result.failures + [
            (d, "invalid vector: non-finite, zero or constant") for d in bad["doc_id"].to_list()
        ]
        letters.record([(d, FAILED, reason) for d, reason in shard_failures])
        letters.clear(previously_failed.intersection(valid["doc_id"].to_list()))  # succeeded now
        failed += shard_failures
        written.shard(key, embedded=result.embedded, failures=len(shard_failures))
        embedded += result.embedded
        model_failures += len(result.failures)
        done["n"] += result.embedded + len(result.failures)
    if model_loaded and total >= RELEASE_AFTER_ROWS:  # read whole: the step's last use of it
        embedding_model.release_pages()  # (feature_store_entries says why)
    if failed:
        context.log.warning(f"{len(failed)} documents failed: {failed[:10]}")
    attempted = embedded + model_failures  # documents handed to the model in this run
    return written.result(
        embedded=embedded,
        reused=total - attempted,
        attempted=attempted,
        failures=len(failed),
        chunks=chunks,
        documents_per_second=rate(embedded, started),
        model=embedder.model_name,
        device=embedder.device,
        model_loaded=model_loaded,
        precision=embedder.precision,
        version=spec.tag,
    )


@dg.asset(deps=[document_vectors], kinds={"redis"}, **_COMMON)
@fail_once_on_refusal
def feature_store_entries(
    context: dg.AssetExecutionContext,
    config: ChangedDocuments,
    embedding_model: EmbeddingModelResource,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
    source: DocumentSourceResource,
) -> dg.MaterializeResult:
    """One compact binary record per document in Redis; gone documents leave it."""
    record_run_process(context)
    started = time.perf_counter()
    store = feature_store.store()
    encoding = feature_store.encoding()
    spec = run_spec(context, embedding_model)
    state = shard_state.store()
    policy = eviction_policy(context, store)
    copy = state.load_version_copy(spec.tag)
    try:  # the control keys this version's entries were written with, restored if lost
        restored = store.control.reconcile(spec, VersionCopy.from_json(copy) if copy else None)
    except ControlPlaneConflict as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    if restored:
        context.log.warning(f"restored lost control keys from the version's copy: {restored}")
    columns = ["doc_id", "modified_at", "content_hash", "vector"]  # not the chunk vectors

    def vectors() -> Iterator[pl.DataFrame]:  # one shard in memory at a time
        for key in work_keys(context):
            yield _upstream(state, "document_vectors", key, columns)

    def labeled_passages() -> np.ndarray:
        """The run's last encode (the labeled set, once per process): the static table's pages
        then leave the process, before the calibration reads vectors and the audit's sample
        process reads beside the publish. That moment was a 100k run's peak (docs/benchmarks.md)."""
        passages = labeled_vectors(embedding_model.embedder(), quality.labeled_set())[0]
        embedding_model.release_pages()
        return passages

    # a first publish also calibrates on the labeled set's passages, embedded by this model
    calibration = store.calibration_for(spec, vectors(), extra=labeled_passages)
    labeled_score = record_quality(context, embedding_model, store, spec, calibration)
    embedding_model.release_pages()  # where the labeled set was embedded just now, for its score
    latest = store.control.copy_of(spec)
    if copy is None or VersionCopy.from_json(copy) != latest:
        state.save_version_copy(spec.tag, latest.to_json())
    now = store.entries.server_time()
    stats = publish.PublishStats()
    # a delta run read only its own documents: the rest of its shards' rows, published again
    # where the store lost their entries, are looked up first (see publish.publish)
    changed = set(config.doc_ids or [])
    still_live: Callable[[list[str]], set[str]] | None = None
    if changed:
        # the source is made here, not lazily by the publishing threads (two would each make a client)
        documents = source.source()

        def live_or_changed(ids: list[str]) -> set[str]:
            return changed | documents.live_ids([d for d in ids if d not in changed])

        still_live = live_or_changed

    # a full run into a version with no key yet has nothing to read before writing (the
    # sensors' runs, seconds apart, do not pay for the scan that asks)
    first_fill = not changed and not store.entries.has_entries(spec.tag)

    def publish_shard(key: str) -> tuple[str, list[str], publish.PublishStats]:
        frame = _upstream(state, "document_vectors", key, columns)
        reads = state.load("document_snapshots", key, ["doc_id", "modified_at", "read_at"])
        shard_stats = publish.publish(
            store.entries,
            spec,
            publish.with_read_times(frame, reads),
            calibration,
            now=now,
            max_age_seconds=feature_store.max_age_seconds,
            still_live=still_live,
            first_fill=first_fill,
        )
        return key, frame["doc_id"].to_list(), shard_stats

    audit_sample = None if changed else sampled_audit_follows(context)
    # the audit after this step reads its sample meanwhile (audit/early_sample.py), and what the
    # run freed goes back to the system before that scan fills memory again (the audit's release)
    run_id = context.run.run_id
    if audit_sample and (
        early_sample.release(run_id, audit_sample)
        or early_sample.start(run_id, source.source(), audit_sample, now)
    ):
        release_freed_memory()
    live: set[str] = set()
    rows = 0
    per_shard: dict[str, dict[str, object]] = {}
    # shards are published by PUBLISH_THREADS threads: one encodes its records while others
    # wait on Redis (one thread kept the client and the server each about half busy; two still
    # left both near 0.6 core, and a 1M publish took 41.5-45.6 s with two, 34.7 s with three)
    for key, ids, shard_stats in ordered_map(publish_shard, work_keys(context), PUBLISH_THREADS):
        stats.add(shard_stats)
        per_shard[key] = {"rows": len(ids), "written": shard_stats.written, "gone": 0}
        live.update(ids)
        rows += len(ids)
    shards = set(run_shards(context))
    # a delta run: the ids it was told about; a full run: every stored id (deletions nobody saw).
    # A first fill's version had no key, so no entry of a deletion nobody saw: what it would scan
    # is what it just wrote, and what runs beside it wrote (their deletions are theirs, and the
    # writes never land over a deletion seen after their read). Alone the scan took 0.3 s at
    # 100k and 1.4-1.6 s at 1M (docs/benchmarks.md).
    forget = now - int(TOMBSTONE_RETENTION.total_seconds())
    candidates = config.doc_ids or (
        [] if first_fill else store.entries.scan_ids(spec.tag, forget_deletions_before=forget)
    )
    gone = publish.orphans_among(candidates, live, shards, NUM_SHARDS)
    stats.deleted = publish.remove_entries(store.entries, spec.tag, gone, read_time(context))
    for doc_id in gone:
        figures = per_shard.get(shard_key(shard_of(doc_id, NUM_SHARDS), NUM_SHARDS))
        if figures is not None:
            figures["gone"] = int(figures["gone"]) + 1  # type: ignore[call-overload]
    store.control.dead_letters(spec.tag).clear(gone)
    active = store.control.activate_if_none(spec.tag)
    followed = (
        follow_active_version(
            store,
            state,
            embedding_model,
            work_keys(context),
            list(changed),
            now=now,
            read_time=read_time(context),
            max_age_seconds=feature_store.max_age_seconds,
        )
        if changed
        else None
    )
    if followed and followed.refused:  # docs/architecture.md, "Building a new version"
        context.log.warning(
            f"this deployment writes version {spec.tag}; readers use {active}, which this run "
            f"could not keep current: {followed.refused}. Keep a deployment configured for it "
            "running until `activate`"
        )
    elif followed:
        context.log.info(
            f"kept the active version {active} current beside {spec.tag}: {followed.written} "
            f"written, {followed.removed} removed"
        )
    totals = {
        "rows": rows,
        **{f"entries_{state}": n for state, n in sorted(stats.states.items())},
        "written": stats.written,
        "superseded": stats.superseded,
        "deleted": stats.deleted,
        "bytes_written": stats.bytes_written,
        "bytes_per_entry": round(stats.bytes_written / stats.written, 1) if stats.written else 0,
        "documents_per_second": rate(rows, started),
        "failures": stats.failures,
        "version": spec.tag,
        "active_version": active,
        "writes_active_version": active == spec.tag,
        **(followed.metadata() if followed else {}),
        "bucket_encoding": encoding,
        "maxmemory_policy": policy or "unknown",
        "control_keys_restored": len(restored),
        "not_restored": stats.not_restored,
        "mode": "delta" if config.doc_ids else "full",
        **({"labeled_set_score": labeled_score["score"]} if labeled_score else {}),
    }
    return dg.MaterializeResult(metadata=shard_figures(context, per_shard, totals))


def _upstream(state: ShardStateStore, asset: str, key: str, columns: list[str] | None = None) -> pl.DataFrame:
    frame = state.load(asset, key, columns)
    if frame is None:
        raise dg.Failure(f"{asset} has no stored shard {key} in {state.base}; materialize it first")
    return frame


def calibration_windows(state: ShardStateStore, context: dg.AssetExecutionContext) -> list[str]:
    """A sample of this run's windows, spread over its shards: what static int8 calibrates on."""
    from embedding_assets.embedders.compiled import CALIBRATION_WINDOWS

    keys = work_keys(context)
    per_shard = -(-CALIBRATION_WINDOWS // max(len(keys), 1))
    windows: list[str] = []
    for key in keys:
        chunks = _upstream(state, "chunked_text", key, ["chunks"])["chunks"].explode().drop_nulls()
        windows += chunks.head(per_shard).to_list()
    return windows[:CALIBRATION_WINDOWS]


def _record_input_problems(letters: DeadLetters, rows: pl.DataFrame) -> None:
    """Dead letters for rows (re)computed now: rejected, warned, or cleared when clean."""
    problems, clean = [], []
    # only the four columns a letter needs: rows carry their text, and 100k rows as dicts took 0.8 s
    for row in rows.select("doc_id", "source_id", "skip_reason", "note").iter_rows(named=True):
        key = dead_letter_id(row)
        if row["skip_reason"]:
            problems.append((key, REJECTED, row["skip_reason"]))
        elif row["note"]:
            problems.append((key, WARNING, row["note"]))
        else:
            clean.append(key)
    letters.record(problems)
    letters.clear(clean, kinds=[REJECTED, WARNING])


embedding_assets = [document_snapshots, chunked_text, document_vectors, feature_store_entries]
