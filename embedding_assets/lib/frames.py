"""The frames the steps pass on: one row per document, so a shard's state merges by ``doc_id``.

Each intermediate asset stores one such frame per shard (stores/shard_state.py).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import polars as pl

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
        # when this state of the document was read (the feature store server's clock): a state
        # read after an entry was written is newer than it, whatever modified_at says
        "read_at": TS,
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
        "read_at": TS,  # the snapshot row's: which read of the document this was computed from
    }
)


def lists_of(flat: list, counts: list[int], inner: pl.DataType) -> pl.Series:
    """A List column from its rows' values laid end to end and each row's count. Built by a
    group-by in Rust: from a list of Python lists, polars makes a Series per row (10x slower)."""
    n = len(counts)
    owner = np.repeat(np.arange(n, dtype=np.int64), np.asarray(counts, dtype=np.int64))
    grouped = (
        pl.DataFrame({"row": owner, "value": pl.Series(flat, dtype=inner)})
        .group_by("row", maintain_order=True)
        .agg("value")
    )
    rows = pl.DataFrame({"row": np.arange(n, dtype=np.int64)})
    full = rows.join(grouped, on="row", how="left", maintain_order="left")
    return full.select(pl.col("value").fill_null(pl.lit([], dtype=pl.List(inner))))["value"]


def vector_schema(dimension: int) -> pl.Schema:
    return pl.Schema(
        {
            "doc_id": pl.String,
            "modified_at": TS,
            "content_hash": pl.UInt64,
            "n_chunks": pl.Int32,
            "vector": pl.Array(pl.Float32, dimension),
            "chunk_vectors": pl.List(pl.Array(pl.Float32, dimension)),
            "read_at": TS,
        }
    )


# Columns a later release added that stored state may lack: they read as nulls.
ADDED_COLUMNS = frozenset({"read_at"})


def compatible(previous: pl.DataFrame | None, schema: pl.Schema) -> pl.DataFrame | None:
    """Stored state written with another schema (an older release) is recomputed, not reused;
    state lacking only ADDED_COLUMNS is reused with them null."""
    if previous is None:
        return None
    required = (k for k in schema.names() if k in previous.columns or k not in ADDED_COLUMNS)
    if any(previous.schema.get(k) != schema[k] for k in required):
        return None
    return conform(previous, schema)


def conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """``frame`` with ``schema``'s columns in its order; columns an older release did not write
    are added as nulls."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in frame.columns]
    return frame.with_columns(missing).select(schema.names())


def dead_letter_id(row: dict) -> str:
    """Dead letters are keyed by doc_id; a document without one by its MongoDB ``_id``."""
    return row["doc_id"] if row["doc_id"] is not None else f"_id:{row['source_id']}"


def source_millis(frame: pl.DataFrame) -> list[int]:
    """``modified_at`` as unix milliseconds (0 where missing): what records carry as ``source_ms``."""
    return frame["modified_at"].dt.epoch("ms").fill_null(0).to_list()


def split_own(
    frame: pl.DataFrame, previous: pl.DataFrame | None, changed: Collection[str]
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """A delta run's rows to compute (its own documents, ``changed``) and the other documents'
    rows as stored (``previous``), carried unchanged; with no ``changed`` (a full run), every row
    is computed. Another run's edit in the same shard is computed by that run: a deletion run
    beside a change run loaded the model to embed the edit the change run embedded anyway."""
    if not changed or previous is None:
        return frame, None
    own = frame.filter(pl.col("doc_id").is_in(list(changed)))
    others = frame.filter(~pl.col("doc_id").is_in(list(changed)))["doc_id"].to_list()
    return own, previous.filter(pl.col("doc_id").is_in(others))
