"""The steps of the asset graph as plain functions over polars frames.

Each intermediate frame has one row per document so that a shard's state can be merged
by ``doc_id``. The Dagster assets in ``defs/assets.py`` only wire these together.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q
from embedding_assets.lib.chunking import Tokenizer, chunk_texts
from embedding_assets.lib.feature_store import FeatureStore
from embedding_assets.lib.pooling import pool_documents
from embedding_assets.lib.text import coerce_text_field, content_hash, embeddable_text
from embedding_assets.lib.versioning import EmbeddingSpec

TS = pl.Datetime("ms", "UTC")
SNAPSHOT_SCHEMA = pl.Schema(
    {
        "doc_id": pl.String,
        "source_id": pl.String,
        "title": pl.String,
        "body": pl.String,
        "language": pl.String,
        "indexed_at": TS,
        "modified_at": TS,
        "notes": pl.String,
    }
)
CHUNK_SCHEMA = pl.Schema(
    {
        "doc_id": pl.String,
        "modified_at": TS,
        "content_hash": pl.UInt64,
        "n_tokens": pl.Int32,
        "chunks": pl.List(pl.String),
        "chunk_tokens": pl.List(pl.Int32),
        "skip_reason": pl.String,
        "note": pl.String,
    }
)


def vector_schema(dimension: int) -> pl.Schema:
    return pl.Schema(
        {
            "doc_id": pl.String,
            "modified_at": TS,
            "content_hash": pl.UInt64,
            "n_chunks": pl.Int32,
            "vector": pl.Array(pl.Float32, dimension),
            "chunk_vectors": pl.List(pl.Array(pl.Float32, dimension)),
        }
    )


# -- document_snapshots ------------------------------------------------------------------------
def _timestamp(value: object, name: str, notes: list[str]) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value
    notes.append(f"{name} is {type(value).__name__}, not a date; ignored")
    return None


def snapshot_row(doc: dict) -> dict:
    """A source document as a typed row; oddities become notes, never exceptions."""
    notes: list[str] = []
    title, title_note = coerce_text_field(doc.get("title"), "title")
    body, body_note = coerce_text_field(doc.get("body"), "body")
    language, lang_note = coerce_text_field(doc.get("language"), "language")
    notes += [n for n in (title_note, body_note, lang_note) if n]
    doc_id = doc.get("doc_id")
    return {
        "doc_id": None if doc_id is None else str(doc_id),
        "source_id": str(doc.get("_id")) if doc.get("_id") is not None else None,
        "title": title,
        "body": body,
        "language": language,
        "indexed_at": _timestamp(doc.get("indexed_at"), "indexed_at", notes),
        "modified_at": _timestamp(doc.get("modified_at"), "modified_at", notes),
        "notes": "; ".join(notes) or None,
    }


def snapshot_frames(docs: Iterable[tuple[int, dict]], shards: Iterable[int]) -> dict[int, pl.DataFrame]:
    """Route ``(shard, document)`` pairs into one frame per shard, sorted by doc_id."""
    rows: dict[int, list[dict]] = {s: [] for s in shards}
    for shard, doc in docs:
        rows[shard].append(snapshot_row(doc))
    return {
        s: pl.DataFrame(r, schema=SNAPSHOT_SCHEMA, orient="row" if not r else None).sort(
            "doc_id", nulls_last=True
        )
        for s, r in rows.items()
    }


# -- chunked_text ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkSettings:
    window_tokens: int
    overlap_tokens: int
    title_repeat: int
    max_chars: int
    tokenize_batch: int = 256


def chunk_frame(
    snapshot: pl.DataFrame, tokenizer: Tokenizer, settings: ChunkSettings, version: str
) -> pl.DataFrame:
    rows: list[dict] = []
    batch: list[tuple[dict, str, str | None]] = []

    def flush() -> None:
        chunked = chunk_texts(
            [text for _, text, _ in batch],
            tokenizer,
            window=settings.window_tokens,
            overlap=settings.overlap_tokens,
        )
        for (doc, text, note), chunks in zip(batch, chunked, strict=True):
            tokens = [c.n_tokens for c in chunks]
            rows.append(
                {
                    "doc_id": doc["doc_id"],
                    "modified_at": doc["modified_at"],
                    "content_hash": content_hash(text, version),
                    "n_tokens": sum(tokens),
                    "chunks": [c.text for c in chunks],
                    "chunk_tokens": tokens,
                    "skip_reason": None if chunks else "no tokens in text",
                    "note": note,
                }
            )
        batch.clear()

    for doc in snapshot.iter_rows(named=True):
        if doc["doc_id"] is None:
            rows.append(_skipped(doc, f"missing doc_id (source _id {doc['source_id']})"))
            continue
        embeddable = embeddable_text(
            doc["title"],
            doc["body"],
            title_repeat=settings.title_repeat,
            max_chars=settings.max_chars,
            notes=doc["notes"],
        )
        if embeddable.skip_reason:
            rows.append(_skipped(doc, embeddable.skip_reason))
            continue
        batch.append((doc, embeddable.text, embeddable.note))
        if len(batch) >= settings.tokenize_batch:
            flush()
    if batch:
        flush()
    return pl.DataFrame(rows, schema=CHUNK_SCHEMA) if rows else CHUNK_SCHEMA.to_frame()


def _skipped(doc: dict, reason: str) -> dict:
    return {
        "doc_id": doc["doc_id"],
        "modified_at": doc["modified_at"],
        "content_hash": None,
        "n_tokens": 0,
        "chunks": [],
        "chunk_tokens": [],
        "skip_reason": reason,
        "note": doc["notes"],
    }


# -- document_vectors -----------------------------------------------------------------------------
Encoder = Callable[[list[str], list[int]], np.ndarray]
Progress = Callable[[int, int], None]


def vector_frame(
    chunked: pl.DataFrame,
    encode: Encoder,
    dimension: int,
    *,
    docs_per_batch: int = 512,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Embed every chunk and pool each document's chunks (token-weighted mean, unit length)."""
    todo = chunked.filter(pl.col("skip_reason").is_null())
    schema = vector_schema(dimension)
    parts: list[pl.DataFrame] = []
    total = todo.height
    for offset in range(0, total, docs_per_batch):
        part = todo.slice(offset, docs_per_batch)
        texts = part["chunks"].explode().to_list()
        tokens = part["chunk_tokens"].explode().to_list()
        counts = part["chunks"].list.len().to_numpy().astype(np.int64)
        vectors = encode(texts, tokens)
        owner = np.repeat(np.arange(part.height), counts)
        pooled = pool_documents(vectors, np.asarray(tokens, dtype=np.float32), owner, part.height)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        parts.append(
            pl.DataFrame(
                {
                    "doc_id": part["doc_id"],
                    "modified_at": part["modified_at"],
                    "content_hash": part["content_hash"],
                    "n_chunks": pl.Series(counts, dtype=pl.Int32),
                    "vector": pl.Series(pooled, dtype=schema["vector"]),
                    "chunk_vectors": pl.Series(
                        [vectors[bounds[i] : bounds[i + 1]] for i in range(part.height)],
                        dtype=schema["chunk_vectors"],
                    ),
                },
                schema=schema,
            )
        )
        if progress:
            progress(min(offset + docs_per_batch, total), total)
    return pl.concat(parts) if parts else schema.to_frame()


def invalid_vector_mask(vectors: np.ndarray) -> np.ndarray:
    """Rows that must never be published: non-finite, all-zero or constant vectors."""
    if vectors.size == 0:
        return np.zeros(vectors.shape[0], dtype=bool)
    finite = np.isfinite(vectors).all(axis=1)
    spread = np.ptp(np.where(np.isfinite(vectors), vectors, 0.0), axis=1)
    return ~finite | (spread == 0)


def split_invalid(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(valid, invalid)`` rows of a vector frame."""
    if frame.height == 0:
        return frame, frame
    mask = pl.Series(invalid_vector_mask(vectors_matrix(frame)))
    return frame.filter(~mask), frame.filter(mask)


def vectors_matrix(frame: pl.DataFrame) -> np.ndarray:
    if frame.height == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return frame["vector"].to_numpy().astype(np.float32, copy=False)


# -- feature_store_entries ------------------------------------------------------------------------
def encode_entries(
    frame: pl.DataFrame,
    spec: EmbeddingSpec,
    calibration: q.Int8Calibration | None,
    computed_at: int,
) -> list[bytes]:
    """Quantize and encode every row of a vector frame into a feature-store value."""
    if frame.height == 0:
        return []
    vectors = vectors_matrix(frame)
    if spec.quantization == q.INT8:
        if calibration is None:
            raise ValueError("int8 entries need the version's calibration")
        codes = q.quantize_int8(vectors, calibration)
    else:
        codes = q.quantize_binary(vectors)
    modified_ms = frame["modified_at"].dt.epoch("ms").fill_null(0).to_numpy().astype(np.int64, copy=False)
    return codec.encode_records(
        codes,
        codec=spec.quantization,
        dimension=spec.dimension,
        version_id=spec.version_id,
        computed_at=computed_at,
        content_hashes=frame["content_hash"].to_numpy(),
        source_ms=modified_ms,
    )


def now_seconds() -> int:
    return int(time.time())


# -- publishing ------------------------------------------------------------------------------------
CALIBRATION_SAMPLE = 20_000


@dataclass(frozen=True)
class PublishStats:
    entries: int
    bytes_written: int


def calibration_for(
    store: FeatureStore, spec: EmbeddingSpec, frames: list[pl.DataFrame]
) -> q.Int8Calibration | None:
    """The version's stored calibration; the first publish computes it from its own vectors."""
    if spec.quantization != q.INT8:
        return None
    stored = store.calibration(spec.tag)
    if stored is not None:
        return stored
    sample = [f.head(CALIBRATION_SAMPLE) for f in frames if f.height]
    if not sample:
        return None
    return store.ensure_calibration(spec.tag, q.calibrate_int8(vectors_matrix(pl.concat(sample))))


def publish(
    store: FeatureStore, spec: EmbeddingSpec, frame: pl.DataFrame, calibration: q.Int8Calibration | None
) -> PublishStats:
    values = encode_entries(frame, spec, calibration, now_seconds())
    written = store.write(spec.tag, frame["doc_id"].to_list(), values)
    return PublishStats(entries=len(values), bytes_written=written)
