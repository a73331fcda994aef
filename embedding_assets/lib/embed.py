"""Step 3, document_vectors: every chunk embedded, chunks pooled into one unit vector per document.

The embedder is anything that satisfies ``protocols.Embedder``. Its errors split two ways:
transient ones (overload, timeout: the provider's fault) are retried with backoff and, if they
last, fail the step, so no document is blamed for them; any other error is the input's, and the
batch is bisected until the documents that cause it are isolated and reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import tenacity

from embedding_assets.lib.frames import CHUNK_SCHEMA, compatible, conform, vector_schema
from embedding_assets.lib.pooling import chunk_weights, pool_documents
from embedding_assets.lib.protocols import Embedder

Progress = Callable[[int, int], None]
Encoder = Callable[[list[str], list[int | None]], np.ndarray]


@dataclass
class VectorResult:
    frame: pl.DataFrame
    embedded: int  # documents embedded now (not reused)
    failures: list[tuple[str, str]]  # (doc_id, reason) of documents the model failed on


def vector_frame(
    chunked: pl.DataFrame,
    embedder: Embedder,
    *,
    retry_seconds: float = 120.0,
    previous: pl.DataFrame | None = None,
    docs_per_batch: int = 512,
    progress: Progress | None = None,
    checkpoint: Callable[[pl.DataFrame], None] | None = None,
    checkpoint_seconds: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    before_embedding: Callable[[], None] | None = None,
    pooling: str = "mean",
) -> VectorResult:
    """Embed every chunk and pool each document's chunks by ``pooling`` (lib/pooling.py).

    Documents whose ``(doc_id, content_hash)`` is in ``previous`` keep their vectors: nothing
    is embedded twice. A batch the model fails on is split until the failing documents are
    isolated; the others go on. Finished batches are handed to ``checkpoint`` once at least
    ``checkpoint_seconds`` have passed since the last one (0: every batch), so that a killed run
    loses the batch in flight and at most that much finished work: a slow model's every batch
    is kept, and a fast one does not write a file per few milliseconds of work (the caller
    stores what is returned whole). ``before_embedding`` is called only when there is something
    to embed (loading a model costs more than most deltas).
    """
    schema = vector_schema(embedder.dimension)
    todo = conform(chunked, CHUNK_SCHEMA).filter(pl.col("skip_reason").is_null())
    encode = _retrying(embedder, retry_seconds)
    parts: list[pl.DataFrame] = []
    previous = compatible(previous, schema)
    if previous is not None and previous.height:
        keys = ["doc_id", "content_hash"]
        parts.append(
            todo.select(*keys, "modified_at", "read_at")
            .join(previous.drop("modified_at", "read_at"), on=keys, how="inner")
            .select(schema.names())
        )
        todo = todo.join(previous.select(keys), on=keys, how="anti")
    failures: list[tuple[str, str]] = []
    embedded = 0
    if todo.height and before_embedding:
        before_embedding()
    unsaved: list[pl.DataFrame] = []
    saved_at = clock()
    for offset in range(0, todo.height, docs_per_batch):
        part, failed = _embed_isolating(todo.slice(offset, docs_per_batch), encode, embedder, schema, pooling)
        failures += failed
        embedded += part.height
        parts.append(part)
        if checkpoint and part.height:
            unsaved.append(part)
            if clock() - saved_at >= checkpoint_seconds:
                checkpoint(pl.concat(unsaved))
                unsaved.clear()
                saved_at = clock()
        if progress:
            progress(min(offset + docs_per_batch, todo.height), todo.height)
    frame = pl.concat(parts) if parts else schema.to_frame()
    # in doc_id order already where nothing was reused (the chunks are stored sorted): a sort
    # would only copy the vectors, 0.3 s of a 100k run
    if not frame["doc_id"].is_sorted():
        frame = frame.sort("doc_id")
    return VectorResult(frame, embedded, failures)


def _retrying(embedder: Embedder, max_seconds: float) -> Encoder:
    """``embedder.encode`` retried on its transient errors, with backoff, for ``max_seconds``."""
    return tenacity.retry(
        retry=tenacity.retry_if_exception(embedder.is_transient),
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=15.0),
        stop=tenacity.stop_after_delay(max_seconds),
        reraise=True,
    )(embedder.encode)


def _embed_isolating(
    part: pl.DataFrame, encode: Encoder, embedder: Embedder, schema: pl.Schema, pooling: str
) -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    try:
        return _embed(part, encode, schema, pooling), []
    except Exception as err:
        if embedder.is_transient(err):  # outlasted its retries: the step fails, nobody is blamed
            raise
        # the input's fault: bisect to find the documents causing it
        if part.height == 1:
            return schema.to_frame(), [
                (part["doc_id"].item(), f"embedding failed: {type(err).__name__}: {err}")
            ]
        half = part.height // 2
        left, left_failed = _embed_isolating(part.slice(0, half), encode, embedder, schema, pooling)
        right, right_failed = _embed_isolating(part.slice(half), encode, embedder, schema, pooling)
        return pl.concat([left, right]), left_failed + right_failed


def _embed(part: pl.DataFrame, encode: Encoder, schema: pl.Schema, pooling: str) -> pl.DataFrame:
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
        weights = chunk_weights(tokens.fill_null(1).to_numpy(), counts, pooling)
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
            "read_at": part["read_at"],
        },
        schema=schema,
    )
