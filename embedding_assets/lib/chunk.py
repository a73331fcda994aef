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
from embedding_assets.lib.text import content_hash, document_text
from embedding_assets.lib.versioning import EmbeddingSpec


@dataclass(frozen=True)
class ChunkPlan:
    """How a version cuts text: its spec, and whether the embedder takes whole documents."""

    spec: EmbeddingSpec
    # One chunk per document, the whole text (static models have no position limit): no
    # tokenizing here at all, the embedder tokenizes once. Token counts stay null.
    single_chunk: bool = False
    tokenize_batch: int = 256


# chunk_frame's row tuples: the snapshot's first _CARRIED columns, then what chunking computes
_ROW_COLUMNS = (
    "doc_id",
    "source_id",
    "modified_at",
    "read_at",
    "content_hash",
    "n_tokens",
    "skip_reason",
    "note",
)
_CARRIED = 4


def chunk_frame(
    snapshot: pl.DataFrame,
    tokenizer: Tokenizer | None,
    plan: ChunkPlan,
    previous: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Chunks of every document; rows of ``previous`` whose content hash is unchanged are reused.

    Returns ``(frame, reused doc_ids)``. Hashing is cheap; tokenizing only what changed is the saving.
    """
    known: dict[str, int] = {}
    snapshot = conform(snapshot, SNAPSHOT_SCHEMA)
    previous = compatible(previous, CHUNK_SCHEMA)
    if previous is not None and previous.height:
        done = previous.filter(pl.col("skip_reason").is_null())
        known = dict(zip(done["doc_id"].to_list(), done["content_hash"].to_list(), strict=True))
    # Rows as tuples of _ROW_COLUMNS, the list columns' values laid end to end: turned into
    # columns at the end (a frame from row dicts costs polars more than the rows' own making).
    rows: list[tuple] = []
    flat_chunks: list[str] = []
    flat_tokens: list[int | None] = []
    counts: list[int] = []
    reuse: list[str] = []
    batch: list[tuple[tuple, str, str | None, int]] = []

    def flush() -> None:
        texts = [text for _, text, _, _ in batch]
        if plan.single_chunk:  # one chunk per document, no token counts
            for doc, _, note, chash in batch:
                rows.append((*doc[:_CARRIED], chash, None, None, note))
            flat_chunks.extend(texts)
            flat_tokens.extend([None] * len(texts))
            counts.extend([1] * len(texts))
            batch.clear()
            return
        assert tokenizer is not None, "chunking needs the model's tokenizer"
        cut = chunk_texts(
            texts,
            tokenizer,
            window=plan.spec.window_tokens,
            overlap=plan.spec.overlap_tokens,
            max_windows=windows_that_count(plan.spec.pooling),
        )
        for (doc, _, note, chash), chunks in zip(batch, cut, strict=True):
            tokens = [c.n_tokens for c in chunks]
            rows.append((*doc[:_CARRIED], chash, sum(tokens), None if chunks else "no tokens in text", note))
            flat_chunks.extend(c.text for c in chunks)
            flat_tokens.extend(tokens)
            counts.append(len(chunks))
        batch.clear()

    def skipped(doc: tuple, reason: str) -> None:
        rows.append((*doc[:_CARRIED], None, 0, reason, doc[-1]))
        counts.append(0)

    names = [*_ROW_COLUMNS[:_CARRIED], "title", "body", "notes"]
    for doc in zip(*(snapshot[name].to_list() for name in names), strict=True):
        doc_id, source_id, _, _, title, body, notes = doc
        if doc_id is None:
            noted = notes or ""
            why = noted.split("; ")[0] if noted.startswith("doc_id ") else "missing doc_id"
            skipped(doc, f"{why} (source _id {source_id})")
            continue
        embeddable = document_text(title, body, plan.spec, notes=notes)
        if embeddable.skip_reason:
            skipped(doc, embeddable.skip_reason)
            continue
        chash = content_hash(embeddable.text, plan.spec.tag)
        if known.get(doc_id) == chash:
            reuse.append(doc_id)
            continue
        batch.append((doc, embeddable.text, embeddable.note, chash))
        if len(batch) >= plan.tokenize_batch:
            flush()
    if batch:
        flush()
    parts = []
    if rows:
        columns = {
            name: pl.Series(name, values, dtype=CHUNK_SCHEMA[name])
            for name, values in zip(_ROW_COLUMNS, zip(*rows, strict=True), strict=True)
        }
        columns["chunks"] = lists_of(flat_chunks, counts, pl.String)
        columns["chunk_tokens"] = lists_of(flat_tokens, counts, pl.Int32)
        parts.append(pl.DataFrame(columns).select(CHUNK_SCHEMA.names()))
    if reuse:
        assert previous is not None
        reused = (
            previous.filter(pl.col("doc_id").is_in(reuse))
            .drop("modified_at", "read_at")
            .join(snapshot.select("doc_id", "modified_at", "read_at"), on="doc_id", how="left")
            .select(CHUNK_SCHEMA.names())
        )
        parts.append(reused)
    frame = pl.concat(parts) if parts else CHUNK_SCHEMA.to_frame()
    return frame.sort("doc_id", nulls_last=True), reuse
