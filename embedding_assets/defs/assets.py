"""The asset graph: document_snapshots -> chunked_text -> document_vectors -> feature_store_entries.

Every asset is partitioned by shard and runs many shards in one run when a backfill asks
(single-run backfill policy): the model loads once and MongoDB is scanned once.
"""

import time
import warnings

import dagster as dg
import polars as pl

from embedding_assets.defs.partitions import NUM_SHARDS, run_shards, shard_partitions
from embedding_assets.defs.resources import (
    DocumentSourceResource,
    EmbeddingModelResource,
    FeatureStoreResource,
)
from embedding_assets.lib import pipeline
from embedding_assets.lib.sharding import shard_key

Frames = dict[str, pl.DataFrame]

# single_run backfills are what make a whole-collection backfill one MongoDB scan.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

_COMMON = dict(
    partitions_def=shard_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="embeddings",
)


def _rate(count: int, started: float) -> float:
    return round(count / max(time.perf_counter() - started, 1e-9), 1)


@dg.asset(io_manager_key="parquet_io_manager", kinds={"mongodb", "polars"}, **_COMMON)
def document_snapshots(context: dg.AssetExecutionContext, source: DocumentSourceResource) -> Frames:
    """The shard's documents as they are in MongoDB: ids, text fields, language, timestamps."""
    started = time.perf_counter()
    shards = run_shards(context)
    frames = pipeline.snapshot_frames(source.source().iter_shards(shards, NUM_SHARDS), shards)
    rows = sum(f.height for f in frames.values())
    context.add_output_metadata(
        {"rows": rows, "documents_per_second": _rate(rows, started), "shards": len(shards)}
    )
    return {shard_key(s, NUM_SHARDS): f for s, f in frames.items()}


@dg.asset(io_manager_key="parquet_io_manager", kinds={"polars"}, **_COMMON)
def chunked_text(
    context: dg.AssetExecutionContext,
    document_snapshots: Frames,
    embedding_model: EmbeddingModelResource,
) -> Frames:
    """Token-window chunks per document, cut with the model's own tokenizer; skips say why."""
    tokenizer = embedding_model.embedder().tokenizer  # loads the model: not counted in the rate
    settings = embedding_model.chunk_settings()
    version = embedding_model.spec().tag
    started = time.perf_counter()
    out = {
        key: pipeline.chunk_frame(frame, tokenizer, settings, version)
        for key, frame in document_snapshots.items()
    }
    combined = pl.concat(list(out.values())) if out else pipeline.CHUNK_SCHEMA.to_frame()
    skipped = combined.filter(pl.col("skip_reason").is_not_null())
    context.add_output_metadata(
        {
            "rows": combined.height,
            "chunks": int(combined["chunks"].list.len().sum() or 0),
            "tokens": int(combined["n_tokens"].sum() or 0),
            "skipped": skipped.height,
            "failures": skipped.height,
            "skip_reasons": dg.MetadataValue.md(_reason_table(skipped)),
            "documents_per_second": _rate(combined.height, started),
            "version": version,
        }
    )
    return out


@dg.asset(io_manager_key="parquet_io_manager", kinds={"pytorch", "polars"}, **_COMMON)
def document_vectors(
    context: dg.AssetExecutionContext,
    chunked_text: Frames,
    embedding_model: EmbeddingModelResource,
) -> Frames:
    """Chunk vectors from sentence-transformers, pooled into one unit vector per document."""
    embedder = embedding_model.embedder()
    embedder.model  # noqa: B018 - load before timing
    started = time.perf_counter()
    todo = {k: f.filter(pl.col("skip_reason").is_null()).height for k, f in chunked_text.items()}
    total = sum(todo.values())
    done = 0

    def progress(batch_done: int, batch_total: int) -> None:
        elapsed = time.perf_counter() - started
        now = done + batch_done
        rate = now / max(elapsed, 1e-9)
        eta = (total - now) / rate if rate else float("inf")
        context.log.info(f"embedded {now}/{total} documents, {rate:.1f}/s, ETA {eta:.0f}s")

    out: Frames = {}
    invalid: list[str] = []
    for key, frame in chunked_text.items():
        vectors = pipeline.vector_frame(frame, embedder.encode, embedder.dimension, progress=progress)
        out[key], bad = pipeline.split_invalid(vectors)
        invalid += bad["doc_id"].to_list()
        done += todo[key]
    if invalid:
        context.log.warning(f"{len(invalid)} invalid vectors dropped: {invalid[:20]}")
    rows = sum(f.height for f in out.values())
    context.add_output_metadata(
        {
            "rows": rows,
            "chunks": int(sum(f["n_chunks"].sum() or 0 for f in out.values())),
            "documents_per_second": _rate(rows, started),
            "failures": len(invalid),
            "model": embedder.model_name,
            "device": embedder.device,
            "precision": embedder.precision,
        }
    )
    return out


@dg.asset(kinds={"redis"}, **_COMMON)
def feature_store_entries(
    context: dg.AssetExecutionContext,
    document_vectors: Frames,
    embedding_model: EmbeddingModelResource,
    feature_store: FeatureStoreResource,
) -> dg.MaterializeResult:
    """One compact binary record per document in Redis, under the version's key prefix."""
    started = time.perf_counter()
    store = feature_store.store()
    spec = embedding_model.spec()
    store.register_version(spec)
    frames = list(document_vectors.values())
    calibration = pipeline.calibration_for(store, spec, frames)
    entries = written = 0
    for frame in frames:
        stats = pipeline.publish(store, spec, frame, calibration)
        entries += stats.entries
        written += stats.bytes_written
    received = sum(f.height for f in frames)
    active = store.activate_if_none(spec.tag)
    return dg.MaterializeResult(
        metadata={
            "rows": entries,
            "bytes_written": written,
            "bytes_per_entry": round(written / entries, 1) if entries else 0,
            "documents_per_second": _rate(entries, started),
            "failures": received - entries,
            "version": spec.tag,
            "active_version": active,
        }
    )


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
