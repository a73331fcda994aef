"""The asset graph: document_snapshots -> chunked_text -> document_vectors -> feature_store_entries.

Every asset is partitioned by shard. A run either covers its shards fully (backfills, the
daily sweep: MongoDB is scanned once, entries nobody deleted are reconciled) or carries the
doc_ids a sensor saw change, which each asset merges into its shard's stored state. Work
whose content hash did not change is reused, never redone.
"""

import datetime as dt
import time
import warnings
from collections.abc import Iterator

import dagster as dg
import polars as pl

from embedding_assets.defs.io_manager import ShardFrames, StoredShards
from embedding_assets.defs.partitions import NUM_SHARDS, run_shards, shard_partitions
from embedding_assets.defs.resources import (
    DocumentSourceResource,
    EmbeddingModelResource,
    FeatureStoreResource,
    ShardStateResource,
)
from embedding_assets.lib import pipeline
from embedding_assets.lib.dead_letters import FAILED, REJECTED, WARNING, DeadLetters
from embedding_assets.lib.shard_state import ShardSpool
from embedding_assets.lib.sharding import shard_key, shard_of

# single_run backfills are what make a whole-collection backfill one MongoDB scan.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

# Each asset's step runs in one run at a time (pools, default limit 1 in dagster.yaml): a
# shard's stored state is read, merged and written by one run at a time, whatever launched it.
_COMMON = dict(
    partitions_def=shard_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="embeddings",
    # whole-step retries for what the in-step retries could not ride out
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
)


class ChangedDocuments(dg.Config):
    """doc_ids a sensor saw added, modified or deleted; empty means the whole shard."""

    doc_ids: list[str] = []


def _rate(count: int, started: float) -> float:
    return round(count / max(time.perf_counter() - started, 1e-9), 1)


@dg.asset(
    io_manager_key="parquet_io_manager", kinds={"mongodb", "polars"}, pool="ea_document_snapshots", **_COMMON
)
def document_snapshots(
    context: dg.AssetExecutionContext,
    config: ChangedDocuments,
    source: DocumentSourceResource,
    shard_state: ShardStateResource,
) -> StoredShards:
    """The shard's live documents as they are in MongoDB: ids, text fields, language, timestamps."""
    started = time.perf_counter()
    read_started = dt.datetime.now(dt.UTC)
    shards = run_shards(context)
    keys = {s: shard_key(s, NUM_SHARDS) for s in shards}
    store = shard_state.store()
    stored = StoredShards()
    unusable = 0
    if not config.doc_ids:
        docs = source.source().iter_shards(shards, NUM_SHARDS)
        spool = ShardSpool(store, "document_snapshots")
        for s, frame in pipeline.snapshot_shards(docs, shards, spool, read_started):
            stored.rows[keys[s]] = frame.height
            unusable += frame["doc_id"].null_count()
            store.save("document_snapshots", keys[s], frame)  # one shard in memory at a time
        rows = sum(stored.rows.values())
        context.add_output_metadata(
            {
                "rows": rows,
                "documents_per_second": _rate(rows, started),
                "failures": unusable,
                "shards": len(shards),
                "mode": "full",
            }
        )
        return stored

    requested = {s: [d for d in config.doc_ids if shard_of(d, NUM_SHARDS) == s] for s in shards}
    fetched = pipeline.snapshot_frames(
        ((shard_of(str(d["doc_id"]), NUM_SHARDS), d) for d in source.source().iter_by_ids(config.doc_ids)),
        range(NUM_SHARDS),
        read_started,
    )
    upserted, deleted = 0, 0
    for s in shards:
        previous = store.load("document_snapshots", keys[s])
        frame, up, gone = pipeline.merge_snapshot(previous, fetched[s], requested[s])
        store.save("document_snapshots", keys[s], frame)
        stored.rows[keys[s]] = frame.height
        unusable += frame["doc_id"].null_count()
        upserted += up
        deleted += gone
    context.add_output_metadata(
        {
            "rows": sum(stored.rows.values()),
            "requested": len(config.doc_ids),
            "upserted": upserted,
            "deleted": deleted,
            "documents_per_second": _rate(len(config.doc_ids), started),
            "failures": unusable,
            "mode": "delta",
        }
    )
    return stored


@dg.asset(io_manager_key="parquet_io_manager", kinds={"polars"}, pool="ea_chunked_text", **_COMMON)
def chunked_text(
    context: dg.AssetExecutionContext,
    document_snapshots: ShardFrames,
    embedding_model: EmbeddingModelResource,
    shard_state: ShardStateResource,
    feature_store: FeatureStoreResource,
) -> StoredShards:
    """Token-window chunks per document, cut with the model's own tokenizer; skips say why.

    Documents that cannot be embedded are dead-lettered as rejected, repaired ones as warnings.
    """
    settings = embedding_model.chunk_settings()
    # loads the tokenizer (not counted in the rate); the single-chunk path needs none
    tokenizer = None if settings.single_chunk else embedding_model.embedder().tokenizer
    version = embedding_model.spec().tag
    store = shard_state.store()
    started = time.perf_counter()
    stored = StoredShards()
    totals = {"reused": 0, "chunks": 0, "tokens": 0}
    skipped: list[pl.DataFrame] = []
    letters = DeadLetters(feature_store.store().client, version)
    for key, snapshot in document_snapshots.items():
        frame, reused_ids = pipeline.chunk_frame(
            snapshot, tokenizer, settings, version, previous=store.load("chunked_text", key)
        )
        store.save("chunked_text", key, frame)
        stored.rows[key] = frame.height
        totals["reused"] += len(reused_ids)
        totals["chunks"] += int(frame["chunks"].list.len().sum() or 0)
        totals["tokens"] += int(frame["n_tokens"].sum() or 0)
        skipped.append(frame.filter(pl.col("skip_reason").is_not_null()).select("doc_id", "skip_reason"))
        _record_input_problems(letters, frame.filter(~pl.col("doc_id").is_in(reused_ids).fill_null(False)))
    rows = sum(stored.rows.values())
    skipped_rows = (
        pl.concat(skipped)
        if skipped
        else pl.DataFrame(schema={"doc_id": pl.String, "skip_reason": pl.String})
    )
    context.add_output_metadata(
        {
            "rows": rows,
            "chunked": rows - totals["reused"] - skipped_rows.height,
            "reused": totals["reused"],
            "chunks": totals["chunks"],
            "tokens": totals["tokens"],
            "skipped": skipped_rows.height,
            "failures": skipped_rows.height,
            "skip_reasons": dg.MetadataValue.md(_reason_table(skipped_rows)),
            "documents_per_second": _rate(rows, started),
            "version": version,
        }
    )
    return stored


@dg.asset(
    io_manager_key="parquet_io_manager", kinds={"pytorch", "polars"}, pool="ea_document_vectors", **_COMMON
)
def document_vectors(
    context: dg.AssetExecutionContext,
    chunked_text: ShardFrames,
    embedding_model: EmbeddingModelResource,
    shard_state: ShardStateResource,
    feature_store: FeatureStoreResource,
) -> StoredShards:
    """Chunk vectors from sentence-transformers, pooled into one unit vector per document."""
    embedder = embedding_model.embedder()
    embedder.encode(["warm up"])  # loads the model before timing
    store = shard_state.store()
    started = time.perf_counter()
    total = sum(f["skip_reason"].null_count() for f in _shards(chunked_text, ["skip_reason"]))
    done = {"n": 0}

    def progress(batch_done: int, batch_total: int) -> None:
        now = done["n"] + batch_done
        rate = now / max(time.perf_counter() - started, 1e-9)
        eta = (total - now) / rate if rate else float("inf")
        context.log.info(f"embedded {now}/{total} documents at most, {rate:.1f}/s, ETA {eta:.0f}s")

    stored = StoredShards()
    chunks = 0
    spec = embedding_model.spec()
    feature_store.store().register_version(spec)  # checks read it before publishing
    letters = DeadLetters(feature_store.store().client, spec.tag)
    previously_failed = {d.doc_id for d in letters.all() if d.kind == FAILED}
    failed: list[tuple[str, str]] = []
    embedded = model_failures = 0
    for key, frame in chunked_text.items():
        result = pipeline.vector_frame(
            frame,
            embedder.encode,
            embedder.dimension,
            previous=store.load_with_checkpoints("document_vectors", key),
            docs_per_batch=embedding_model.checkpoint_docs,
            progress=progress,
            checkpoint=lambda part, key=key: store.save_checkpoint("document_vectors", key, part),
        )
        valid, bad = pipeline.split_invalid(result.frame)
        store.save("document_vectors", key, valid)
        stored.rows[key] = valid.height
        chunks += int(valid["n_chunks"].sum() or 0)
        shard_failures = result.failures + [
            (d, "invalid vector: non-finite, zero or constant") for d in bad["doc_id"].to_list()
        ]
        letters.record([(d, FAILED, reason) for d, reason in shard_failures])
        letters.clear(previously_failed.intersection(valid["doc_id"].to_list()))  # succeeded now
        failed += shard_failures
        embedded += result.embedded
        model_failures += len(result.failures)
        done["n"] += result.embedded + len(result.failures)
    if failed:
        context.log.warning(f"{len(failed)} documents failed: {failed[:10]}")
    rows = sum(stored.rows.values())
    attempted = embedded + model_failures  # documents handed to the model in this run
    context.add_output_metadata(
        {
            "rows": rows,
            "embedded": embedded,
            "reused": total - attempted,
            "attempted": attempted,
            "failures": len(failed),
            "chunks": chunks,
            "documents_per_second": _rate(embedded, started),
            "model": embedder.model_name,
            "device": embedder.device,
            "precision": embedder.precision,
            "version": spec.tag,
        }
    )
    return stored


@dg.asset(kinds={"redis"}, pool="ea_feature_store_entries", **_COMMON)
def feature_store_entries(
    context: dg.AssetExecutionContext,
    config: ChangedDocuments,
    document_vectors: ShardFrames,
    embedding_model: EmbeddingModelResource,
    feature_store: FeatureStoreResource,
) -> dg.MaterializeResult:
    """One compact binary record per document in Redis; gone documents leave it."""
    started = time.perf_counter()
    store = feature_store.store()
    encoding = feature_store.encoding()
    spec = embedding_model.spec()
    store.register_version(spec)
    columns = ["doc_id", "modified_at", "content_hash", "vector"]  # not the chunk vectors
    calibration = pipeline.calibration_for(store, spec, _shards(document_vectors, columns))
    now = int(time.time())
    stats = pipeline.PublishStats()
    live: set[str] = set()
    rows = 0
    for frame in _shards(document_vectors, columns):
        stats.add(
            pipeline.publish(
                store, spec, frame, calibration, now=now, max_age_seconds=feature_store.max_age_seconds
            )
        )
        live.update(frame["doc_id"].to_list())
        rows += frame.height
    if config.doc_ids:
        gone = [d for d in config.doc_ids if d not in live and shard_of(d, NUM_SHARDS) in run_shards(context)]
    else:  # a full run: reconcile, for deletions that happened while nothing was watching
        gone = pipeline.orphans(store, spec.tag, set(run_shards(context)), NUM_SHARDS, live)
    stats.deleted = pipeline.remove_entries(store, spec.tag, gone)
    DeadLetters(store.client, spec.tag).clear(gone)
    active = store.activate_if_none(spec.tag)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            **{f"entries_{state}": n for state, n in sorted(stats.states.items())},
            "written": stats.written,
            "superseded": stats.superseded,
            "deleted": stats.deleted,
            "bytes_written": stats.bytes_written,
            "bytes_per_entry": round(stats.bytes_written / stats.written, 1) if stats.written else 0,
            "documents_per_second": _rate(rows, started),
            "failures": stats.failures,
            "version": spec.tag,
            "active_version": active,
            "bucket_encoding": encoding,
            "mode": "delta" if config.doc_ids else "full",
        }
    )


def _shards(frames: ShardFrames, columns: list[str]) -> Iterator[pl.DataFrame]:
    """Each shard in turn, only ``columns`` of it."""
    for key in frames:
        yield frames.load(key, columns)


def _record_input_problems(letters: DeadLetters, rows: pl.DataFrame) -> None:
    """Dead letters for rows (re)computed now: rejected, warned, or cleared when clean."""
    problems, clean = [], []
    for row in rows.iter_rows(named=True):
        key = pipeline.dead_letter_id(row)
        if row["skip_reason"]:
            problems.append((key, REJECTED, row["skip_reason"]))
        elif row["note"]:
            problems.append((key, WARNING, row["note"]))
        else:
            clean.append(key)
    letters.record(problems)
    letters.clear(clean, kinds=[REJECTED, WARNING])


def _reason_table(skipped: pl.DataFrame, limit: int = 20) -> str:
    if skipped.height == 0:
        return "none"
    lines = ["| doc_id | reason |", "| --- | --- |"]
    for row in skipped.head(limit).iter_rows(named=True):
        lines.append(f"| {row['doc_id']} | {row['skip_reason']} |")
    if skipped.height > limit:
        lines.append(f"| ... | {skipped.height - limit} more |")
    return "\n".join(lines)


embedding_assets = [document_snapshots, chunked_text, document_vectors, feature_store_entries]
