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
from embedding_assets.lib.frames import CHUNK_SCHEMA, SNAPSHOT_SCHEMA, compatible, conform
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
    rows: list[dict] = []
    reuse: list[str] = []
    batch: list[tuple[dict, str, str | None, int]] = []

    def flush() -> None:
        texts = [text for _, text, _, _ in batch]
        if plan.single_chunk:
            chunked = [([text], [None]) for text in texts]
        else:
            assert tokenizer is not None, "chunking needs the model's tokenizer"
            cut = chunk_texts(
                texts,
                tokenizer,
                window=plan.spec.window_tokens,
                overlap=plan.spec.overlap_tokens,
                max_windows=windows_that_count(plan.spec.pooling),
            )
            chunked = [([c.text for c in chunks], [c.n_tokens for c in chunks]) for chunks in cut]
        for (doc, _, note, chash), (chunks, tokens) in zip(batch, chunked, strict=True):
            rows.append(
                {
                    "doc_id": doc["doc_id"],
                    "source_id": doc["source_id"],
                    "modified_at": doc["modified_at"],
                    "content_hash": chash,
                    "n_tokens": None if plan.single_chunk else sum(tokens),
                    "chunks": chunks,
                    "chunk_tokens": tokens,
                    "skip_reason": None if chunks else "no tokens in text",
                    "note": note,
                    "read_at": doc["read_at"],
                }
            )
        batch.clear()

    for doc in snapshot.iter_rows(named=True):
        if doc["doc_id"] is None:
            notes = doc["notes"] or ""
            why = notes.split("; ")[0] if notes.startswith("doc_id ") else "missing doc_id"
            rows.append(_skipped(doc, f"{why} (source _id {doc['source_id']})"))
            continue
        embeddable = document_text(doc["title"], doc["body"], plan.spec, notes=doc["notes"])
        if embeddable.skip_reason:
            rows.append(_skipped(doc, embeddable.skip_reason))
            continue
        chash = content_hash(embeddable.text, plan.spec.tag)
        if known.get(doc["doc_id"]) == chash:
            reuse.append(doc["doc_id"])
            continue
        batch.append((doc, embeddable.text, embeddable.note, chash))
        if len(batch) >= plan.tokenize_batch:
            flush()
    if batch:
        flush()
    parts = [pl.DataFrame(rows, schema=CHUNK_SCHEMA)] if rows else []
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
        "read_at": doc["read_at"],
    }
