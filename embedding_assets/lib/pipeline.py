"""The steps of the asset graph as plain functions over polars frames.

Each intermediate frame has one row per document so that a shard's state can be merged
by ``doc_id``. The Dagster assets in ``defs/assets.py`` only wire these together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q
from embedding_assets.lib.chunking import Tokenizer, chunk_texts
from embedding_assets.lib.feature_store import FeatureStore
from embedding_assets.lib.pooling import pool_documents
from embedding_assets.lib.sharding import shard_of
from embedding_assets.lib.staleness import NEEDS_WRITE, classify
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
        "source_id": pl.String,
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


def compatible(previous: pl.DataFrame | None, schema: pl.Schema) -> pl.DataFrame | None:
    """Stored state written with another schema (an older release) is recomputed, not reused."""
    if previous is None or any(previous.schema.get(k) != v for k, v in schema.items()):
        return None
    return previous


def dead_letter_id(row: dict) -> str:
    """Dead letters are keyed by doc_id; a document without one by its MongoDB ``_id``."""
    return row["doc_id"] if row["doc_id"] is not None else f"_id:{row['source_id']}"


# -- document_snapshots ------------------------------------------------------------------------
def is_tombstone(doc: dict) -> bool:
    """A document marked deleted in place counts as deleted."""
    return doc.get("is_deleted") is True or doc.get("deleted_at") is not None


def _timestamp(value: object, name: str, notes: list[str]) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value
    notes.append(f"{name} is {type(value).__name__}, not a date; ignored")
    return None


# ISO 639-1: any other language code is kept but noted (the model is multilingual either way).
LANGUAGE_CODES = frozenset(
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy "
    "da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu "
    "hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb "
    "lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om "
    "or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw "
    "ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu".split()
)


def snapshot_row(doc: dict) -> dict:
    """A source document as a typed row; oddities become notes, never exceptions."""
    notes: list[str] = []
    title, title_note = coerce_text_field(doc.get("title"), "title")
    body, body_note = coerce_text_field(doc.get("body"), "body")
    language, lang_note = coerce_text_field(doc.get("language"), "language")
    notes += [n for n in (title_note, body_note, lang_note) if n]
    if language is not None and language.split("-")[0].lower() not in LANGUAGE_CODES:
        notes.append(f"unknown language code {language[:20]!r}")
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


def _add_note(frame: pl.DataFrame, mask: pl.Expr, note: str | pl.Expr) -> pl.DataFrame:
    note_expr = pl.lit(note) if isinstance(note, str) else note
    return frame.with_columns(
        pl.when(mask)
        .then(pl.concat_str([pl.col("notes"), note_expr], separator="; ", ignore_nulls=True))
        .otherwise(pl.col("notes"))
        .alias("notes")
    )


def snapshot_rows(docs: Iterable[dict]) -> pl.DataFrame:
    """Source documents as typed rows, tombstones dropped; duplicates not resolved yet."""
    rows = [snapshot_row(d) for d in docs if not is_tombstone(d)]
    return pl.DataFrame(rows, schema=SNAPSHOT_SCHEMA) if rows else SNAPSHOT_SCHEMA.to_frame()


def finish_snapshot(frame: pl.DataFrame, read_started: dt.datetime | None = None) -> pl.DataFrame:
    """A shard's rows sorted by doc_id; of duplicate doc_ids the latest modified wins.

    Duplicates, and documents modified after ``read_started`` (changed while the shard was
    being read), are kept with a note saying so.
    """
    with_id = frame.filter(pl.col("doc_id").is_not_null())
    copies = pl.col("doc_id").count().over("doc_id")
    with_id = with_id.with_columns(copies.alias("_copies"))
    deduped = with_id.sort("modified_at", "source_id", nulls_last=False).unique(
        "doc_id", keep="last", maintain_order=True
    )
    deduped = _add_note(
        deduped,
        pl.col("_copies") > 1,
        pl.format("duplicate doc_id: {} copies in the source, the last modified kept", pl.col("_copies")),
    ).drop("_copies")
    if read_started is not None:
        deduped = _add_note(
            deduped,
            pl.col("modified_at") > read_started,
            "modified while its shard was being read; the change sensor embeds the newer state",
        )
    return pl.concat([deduped, frame.filter(pl.col("doc_id").is_null())]).sort("doc_id", nulls_last=True)


def snapshot_frame(docs: Iterable[dict], read_started: dt.datetime | None = None) -> pl.DataFrame:
    return finish_snapshot(snapshot_rows(docs), read_started)


def snapshot_frames(
    docs: Iterable[tuple[int, dict]], shards: Iterable[int], read_started: dt.datetime | None = None
) -> dict[int, pl.DataFrame]:
    """Route ``(shard, document)`` pairs into one frame per shard (small reads: deltas)."""
    return dict(snapshot_shards(docs, shards, None, read_started))


class Spool(Protocol):
    """Somewhere rows of a shard can wait (on disk) while the rest of a scan goes on."""

    def add(self, shard: int, frame: pl.DataFrame) -> None: ...

    def take(self, shard: int) -> list[pl.DataFrame]: ...


def snapshot_shards(
    docs: Iterable[tuple[int, dict]],
    shards: Iterable[int],
    spool: Spool | None,
    read_started: dt.datetime | None = None,
    spill_docs: int = 50_000,
) -> Iterator[tuple[int, pl.DataFrame]]:
    """One scan routed into per-shard snapshots, yielded one shard at a time.

    A scan reads shards interleaved; every ``spill_docs`` documents the buffered rows go to
    ``spool``, so memory holds one buffer and one finished shard, never the collection.
    """
    buffers: dict[int, list[dict]] = {s: [] for s in shards}
    buffered = 0
    for shard, doc in docs:
        buffers[shard].append(doc)
        buffered += 1
        if spool is not None and buffered >= spill_docs:
            for s, waiting in buffers.items():
                if waiting:
                    spool.add(s, snapshot_rows(waiting))
                    buffers[s] = []
            buffered = 0
    for s in list(buffers):
        parts = spool.take(s) if spool is not None else []
        parts.append(snapshot_rows(buffers.pop(s)))
        yield s, finish_snapshot(pl.concat(parts), read_started)


def merge_snapshot(
    previous: pl.DataFrame | None, fetched: pl.DataFrame, requested: Iterable[str]
) -> tuple[pl.DataFrame, int, int]:
    """Apply a delta: requested ids are replaced by what was fetched, or dropped when absent.

    Returns ``(state, upserted, deleted)``.
    """
    requested = set(requested)
    base = previous if previous is not None else SNAPSHOT_SCHEMA.to_frame()
    kept = base.filter(~pl.col("doc_id").is_in(list(requested)))
    fetched = fetched.filter(pl.col("doc_id").is_in(list(requested)))
    state = pl.concat([kept, fetched.select(base.columns)]).sort("doc_id", nulls_last=True)
    deleted = base.height - kept.height - (fetched["doc_id"].is_in(base["doc_id"].implode()).sum())
    return state, fetched.height, int(max(deleted, 0))


# -- chunked_text ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkSettings:
    window_tokens: int
    overlap_tokens: int
    title_repeat: int
    max_chars: int
    oversize: str = "truncate"  # or "reject"
    tokenize_batch: int = 256
    # One chunk per document, the whole text (static models have no position limit): no
    # tokenizing here at all, the embedder tokenizes once. Token counts stay null.
    single_chunk: bool = False


def chunk_frame(
    snapshot: pl.DataFrame,
    tokenizer: Tokenizer,
    settings: ChunkSettings,
    version: str,
    previous: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Chunks of every document; rows of ``previous`` whose content hash is unchanged are reused.

    Returns ``(frame, reused doc_ids)``. Hashing is cheap; tokenizing only what changed is the saving.
    """
    known: dict[str, int] = {}
    previous = compatible(previous, CHUNK_SCHEMA)
    if previous is not None and previous.height:
        done = previous.filter(pl.col("skip_reason").is_null())
        known = dict(zip(done["doc_id"].to_list(), done["content_hash"].to_list(), strict=True))
    rows: list[dict] = []
    reuse: list[str] = []
    batch: list[tuple[dict, str, str | None, int]] = []

    def flush() -> None:
        texts = [text for _, text, _, _ in batch]
        if settings.single_chunk:
            chunked = [([text], [None]) for text in texts]
        else:
            cut = chunk_texts(
                texts, tokenizer, window=settings.window_tokens, overlap=settings.overlap_tokens
            )
            chunked = [([c.text for c in chunks], [c.n_tokens for c in chunks]) for chunks in cut]
        for (doc, _, note, chash), (chunks, tokens) in zip(batch, chunked, strict=True):
            rows.append(
                {
                    "doc_id": doc["doc_id"],
                    "source_id": doc["source_id"],
                    "modified_at": doc["modified_at"],
                    "content_hash": chash,
                    "n_tokens": None if settings.single_chunk else sum(tokens),
                    "chunks": chunks,
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
            oversize=settings.oversize,
        )
        if embeddable.skip_reason:
            rows.append(_skipped(doc, embeddable.skip_reason))
            continue
        chash = content_hash(embeddable.text, version)
        if known.get(doc["doc_id"]) == chash:
            reuse.append(doc["doc_id"])
            continue
        batch.append((doc, embeddable.text, embeddable.note, chash))
        if len(batch) >= settings.tokenize_batch:
            flush()
    if batch:
        flush()
    parts = [pl.DataFrame(rows, schema=CHUNK_SCHEMA)] if rows else []
    if reuse:
        assert previous is not None
        reused = (
            previous.filter(pl.col("doc_id").is_in(reuse))
            .drop("modified_at")
            .join(snapshot.select("doc_id", "modified_at"), on="doc_id", how="left")
            .select(CHUNK_SCHEMA.names())
        )
        parts.append(reused)
    frame = pl.concat(parts) if parts else CHUNK_SCHEMA.to_frame()
    return frame.sort("doc_id", nulls_last=True), reuse


def _skipped(doc: dict, reason: str) -> dict:
    return {
        "doc_id": doc["doc_id"],
        "source_id": doc["source_id"],
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


@dataclass
class VectorResult:
    frame: pl.DataFrame
    embedded: int  # documents embedded now (not reused)
    failures: list[tuple[str, str]]  # (doc_id, reason) of documents the model failed on


def vector_frame(
    chunked: pl.DataFrame,
    encode: Encoder,
    dimension: int,
    *,
    previous: pl.DataFrame | None = None,
    docs_per_batch: int = 512,
    progress: Progress | None = None,
    checkpoint: Callable[[pl.DataFrame], None] | None = None,
) -> VectorResult:
    """Embed every chunk and pool each document's chunks (token-weighted mean, unit length).

    Documents whose ``(doc_id, content_hash)`` is in ``previous`` keep their vectors: nothing
    is embedded twice. A batch the model fails on is split until the failing documents are
    isolated; the others go on. Each finished batch is handed to ``checkpoint`` so that a
    killed run loses at most the batch in flight.
    """
    todo = chunked.filter(pl.col("skip_reason").is_null())
    schema = vector_schema(dimension)
    parts: list[pl.DataFrame] = []
    previous = compatible(previous, schema)
    if previous is not None and previous.height:
        keys = ["doc_id", "content_hash"]
        parts.append(
            todo.select(*keys, "modified_at")
            .join(previous.drop("modified_at"), on=keys, how="inner")
            .select(schema.names())
        )
        todo = todo.join(previous.select(keys), on=keys, how="anti")
    failures: list[tuple[str, str]] = []
    embedded = 0
    for offset in range(0, todo.height, docs_per_batch):
        part, failed = _embed_isolating(todo.slice(offset, docs_per_batch), encode, schema)
        failures += failed
        embedded += part.height
        parts.append(part)
        if checkpoint and part.height:
            checkpoint(part)
        if progress:
            progress(min(offset + docs_per_batch, todo.height), todo.height)
    frame = pl.concat(parts) if parts else schema.to_frame()
    return VectorResult(frame.sort("doc_id"), embedded, failures)


def _embed_isolating(
    part: pl.DataFrame, encode: Encoder, schema: pl.Schema
) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    try:
        return _embed(part, encode, schema), []
    except Exception as err:  # the model's own errors; bisect to find the documents causing them
        if part.height == 1:
            return schema.to_frame(), [
                (part["doc_id"].item(), f"embedding failed: {type(err).__name__}: {err}")
            ]
        half = part.height // 2
        left, left_failed = _embed_isolating(part.slice(0, half), encode, schema)
        right, right_failed = _embed_isolating(part.slice(half), encode, schema)
        return pl.concat([left, right]), left_failed + right_failed


def _embed(part: pl.DataFrame, encode: Encoder, schema: pl.Schema) -> pl.DataFrame:
    texts = part["chunks"].explode().to_list()
    tokens = part["chunk_tokens"].explode()
    counts = part["chunks"].list.len().to_numpy().astype(np.int64)
    vectors = encode(texts, tokens.to_list())
    if vectors.shape != (len(texts), schema["vector"].size):
        raise ValueError(f"model returned shape {vectors.shape} for {len(texts)} chunks")
    if (counts == 1).all():  # one chunk each: the chunk's vector is the document's
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        pooled = (vectors / np.where(norms > 0, norms, 1)).astype(np.float32)
        per_chunk = pl.Series([None] * part.height, dtype=schema["chunk_vectors"])
    else:
        owner = np.repeat(np.arange(part.height), counts)
        weights = tokens.fill_null(1).to_numpy().astype(np.float32)
        pooled = pool_documents(vectors, weights, owner, part.height)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        # a single chunk's vector is the document vector: kept once, not twice
        per_chunk = pl.Series(
            [vectors[bounds[i] : bounds[i + 1]] if counts[i] > 1 else None for i in range(part.height)],
            dtype=schema["chunk_vectors"],
        )
    return pl.DataFrame(
        {
            "doc_id": part["doc_id"],
            "modified_at": part["modified_at"],
            "content_hash": part["content_hash"],
            "n_chunks": pl.Series(counts, dtype=pl.Int32),
            "vector": pl.Series(pooled, dtype=schema["vector"]),
            "chunk_vectors": per_chunk,
        },
        schema=schema,
    )


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


# -- publishing ------------------------------------------------------------------------------------
CALIBRATION_SAMPLE = 20_000


@dataclass
class PublishStats:
    """What a publish did, by the staleness rules' categories."""

    states: dict[str, int] = field(default_factory=dict)
    written: int = 0
    superseded: int = 0
    bytes_written: int = 0
    deleted: int = 0
    failures: int = 0

    def add(self, other: PublishStats) -> None:
        for state, n in other.states.items():
            self.states[state] = self.states.get(state, 0) + n
        self.written += other.written
        self.superseded += other.superseded
        self.bytes_written += other.bytes_written
        self.deleted += other.deleted
        self.failures += other.failures


def calibration_for(
    store: FeatureStore, spec: EmbeddingSpec, frames: Iterable[pl.DataFrame]
) -> q.Int8Calibration | None:
    """The version's stored calibration; the first publish computes it from its own vectors.

    ``frames`` is read lazily, only as far as the sample needs.
    """
    if spec.quantization != q.INT8:
        return None
    stored = store.calibration(spec.tag)
    if stored is not None:
        return stored
    sample: list[pl.DataFrame] = []
    for frame in frames:
        sample.append(frame.head(CALIBRATION_SAMPLE - sum(f.height for f in sample)))
        if sum(f.height for f in sample) >= CALIBRATION_SAMPLE:
            break
    if not sum(f.height for f in sample):
        return None
    return store.ensure_calibration(spec.tag, q.calibrate_int8(vectors_matrix(pl.concat(sample))))


def source_millis(frame: pl.DataFrame) -> list[int]:
    return frame["modified_at"].dt.epoch("ms").fill_null(0).to_list()


def publish(
    store: FeatureStore,
    spec: EmbeddingSpec,
    frame: pl.DataFrame,
    calibration: q.Int8Calibration | None,
    *,
    now: int,
    max_age_seconds: int,
) -> PublishStats:
    """Write what the staleness rules ask for, and only that, never over a newer entry."""
    stats = PublishStats()
    if frame.height == 0:
        return stats
    headers = store.read_headers(spec.tag, frame["doc_id"].to_list())
    states = [
        classify(
            h,
            version_id=spec.version_id,
            content_hash=c,
            source_ms=m,
            now=now,
            max_age_seconds=max_age_seconds,
        )
        for h, c, m in zip(headers, frame["content_hash"].to_list(), source_millis(frame), strict=True)
    ]
    for state in states:
        stats.states[state.value] = stats.states.get(state.value, 0) + 1
    todo = frame.filter(pl.Series([s in NEEDS_WRITE for s in states]))
    values = encode_entries(todo, spec, calibration, now)
    if not values:
        return stats
    ids = todo["doc_id"].to_list()
    stats.written = store.write_if_not_older(spec.tag, ids, values)
    stats.superseded = len(values) - stats.written
    stats.bytes_written = sum(len(v) for v in values)
    # read back: an entry that is neither ours nor from a newer source state is a failure
    for header, chash, ms in zip(
        store.read_headers(spec.tag, ids), todo["content_hash"].to_list(), source_millis(todo), strict=True
    ):
        if header is None or (header.content_hash != chash and header.source_ms <= ms):
            stats.failures += 1
    return stats


def remove_entries(store: FeatureStore, version: str, doc_ids: list[str]) -> int:
    """Delete entries of documents that are gone, unless rewritten since we looked."""
    headers = store.read_headers(version, doc_ids)
    present = [(d, h.source_ms) for d, h in zip(doc_ids, headers, strict=True) if h is not None]
    if not present:
        return 0
    return store.delete_if_not_newer(version, [d for d, _ in present], [m for _, m in present])


def orphans(
    store: FeatureStore, version: str, shards: set[int], num_shards: int, live: set[str]
) -> list[str]:
    """Entries of the given shards whose document is not live: deletions nobody saw."""
    return [
        doc_id
        for doc_id in store.scan_doc_ids(version)
        if doc_id not in live and shard_of(doc_id, num_shards) in shards
    ]
