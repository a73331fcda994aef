"""Step 2, chunked_text: the text each document embeds, cut into token windows.

What is embedded (title weighting, normalization, the size cap) is ``text.document_text`` under
the version's spec; windows come from the model's own tokenizer (``chunking.py``). Documents
whose content hash did not change keep their chunks; documents that cannot be embedded keep a
``skip_reason``.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from embedding_assets.lib.chunking import chunk_texts
from embedding_assets.lib.frames import CHUNK_SCHEMA, SNAPSHOT_SCHEMA, compatible, conform, lists_of
from embedding_assets.lib.pooling import windows_that_count
from embedding_assets.lib.protocols import Tokenizer
from embedding_assets.lib.text import document_texts
from embedding_assets.lib.versioning import EmbeddingSpec


@dataclass(frozen=True)
class ChunkPlan:
    """How a version cuts text: its spec, and whether the embedder takes whole documents."""

    spec: EmbeddingSpec
    # One chunk per document, the whole text (static models have no position limit): no
    # tokenizing here at all, the embedder tokenizes once. Token counts stay null.
    single_chunk: bool = False
    tokenize_batch: int = 256


_CARRIED = ["doc_id", "source_id", "modified_at", "read_at"]


def chunk_frame(
    snapshot: pl.DataFrame,
    tokenizer: Tokenizer | None,
    plan: ChunkPlan,
    previous: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Chunks of every document; rows of ``previous`` whose content hash is unchanged are reused.

    Returns ``(frame, reused doc_ids)``. Hashing is cheap; tokenizing only what changed is the
    saving. The texts stay in polars until a tokenizer needs them (``text.document_texts``).
    """
    snapshot = conform(snapshot, SNAPSHOT_SCHEMA)
    previous = compatible(previous, CHUNK_SCHEMA)
    rows = pl.concat(
        [snapshot.select(*_CARRIED, "notes"), document_texts(snapshot, plan.spec)], how="horizontal"
    ).with_columns(
        pl.when(pl.col("doc_id").is_null())
        .then(_missing_doc_id())
        .otherwise(pl.col("skip_reason"))
        .alias("skip_reason")
    )
    if previous is not None and previous.height:
        known = (
            previous.filter(pl.col("skip_reason").is_null())
            .select("doc_id", pl.col("content_hash").alias("known"))
            .unique("doc_id", keep="last", maintain_order=True)
        )
        rows = rows.join(known, on="doc_id", how="left", maintain_order="left")
    else:
        rows = rows.with_columns(pl.lit(None, pl.UInt64).alias("known"))
    reusable = pl.col("skip_reason").is_null() & (pl.col("known") == pl.col("content_hash")).fill_null(False)
    reuse = rows.filter(reusable)["doc_id"].to_list()
    todo = rows.filter(~reusable & pl.col("skip_reason").is_null())
    skipped = rows.filter(pl.col("skip_reason").is_not_null()).select(
        *_CARRIED,
        pl.lit(None, pl.UInt64).alias("content_hash"),
        pl.lit(0, pl.Int32).alias("n_tokens"),
        pl.lit([], pl.List(pl.String)).alias("chunks"),
        pl.lit([], pl.List(pl.Int32)).alias("chunk_tokens"),
        "skip_reason",
        pl.col("notes").alias("note"),
    )
    parts = [_chunked(todo, tokenizer, plan), skipped]
    if reuse:
        assert previous is not None
        parts.append(
            previous.filter(pl.col("doc_id").is_in(reuse))
            .drop("modified_at", "read_at")
            .join(snapshot.select("doc_id", "modified_at", "read_at"), on="doc_id", how="left")
        )
    frame = pl.concat([part.select(CHUNK_SCHEMA.names()).cast(dict(CHUNK_SCHEMA)) for part in parts])
    return frame.sort("doc_id", nulls_last=True), reuse


def _missing_doc_id() -> pl.Expr:
    """Why a row without a doc_id is skipped: the snapshot's note on it, and its source _id."""
    notes = pl.col("notes").fill_null("")
    why = pl.when(notes.str.starts_with("doc_id ")).then(notes.str.split("; ").list.first())
    source = pl.col("source_id").fill_null("None")
    return pl.concat_str(
        [why.otherwise(pl.lit("missing doc_id")), pl.lit(" (source _id "), source, pl.lit(")")]
    )


def _chunked(todo: pl.DataFrame, tokenizer: Tokenizer | None, plan: ChunkPlan) -> pl.DataFrame:
    """The chunks of documents with text to embed: the whole text, or the tokenizer's windows."""
    if plan.single_chunk:  # one chunk per document, no token counts
        return todo.select(
            *_CARRIED,
            "content_hash",
            pl.lit(None, pl.Int32).alias("n_tokens"),
            pl.concat_list("text").alias("chunks"),
            pl.concat_list(pl.lit(None, pl.Int32)).alias("chunk_tokens"),
            "skip_reason",
            "note",
        )
    assert tokenizer is not None, "chunking needs the model's tokenizer"
    flat_chunks: list[str] = []
    flat_tokens: list[int] = []
    counts: list[int] = []
    totals: list[int] = []
    texts = todo["text"].to_list()
    for start in range(0, len(texts), plan.tokenize_batch):
        cut = chunk_texts(
            texts[start : start + plan.tokenize_batch],
            tokenizer,
            window=plan.spec.window_tokens,
            overlap=plan.spec.overlap_tokens,
            max_windows=windows_that_count(plan.spec.pooling),
        )
        for chunks in cut:
            flat_chunks.extend(c.text for c in chunks)
            flat_tokens.extend(c.n_tokens for c in chunks)
            counts.append(len(chunks))
            totals.append(sum(c.n_tokens for c in chunks))
    return todo.select(
        *_CARRIED,
        "content_hash",
        pl.Series("n_tokens", totals, dtype=pl.Int32),
        lists_of(flat_chunks, counts, pl.String).alias("chunks"),
        lists_of(flat_tokens, counts, pl.Int32).alias("chunk_tokens"),
        pl.when(pl.Series(counts, dtype=pl.Int64) == 0)
        .then(pl.lit("no tokens in text"))
        .otherwise(pl.col("skip_reason"))
        .alias("skip_reason"),
        "note",
    )
