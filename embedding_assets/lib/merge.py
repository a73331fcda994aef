"""Concurrent writes to a shard's state, merged so that the latest read of each document wins.

Runs are not serialized by anything the code can rely on (an instance without pools, a second
deployment, a retried step racing its first attempt): a full run that read MongoDB before a
delta run may write after it. So a write never replaces a shard's state; it merges with it.

- Snapshots are last-writer-wins per document, ordered by when the document was read
  (``read_at``, on the feature store's clock). A deletion is an observation too: it is kept as a
  tombstone (doc_id, read_at), so an older read cannot bring the document back. A full scan of a
  shard observes every document it did not find as absent at the time it started.
- Chunks and vectors are derived: of two rows for a document (the one stored and the one being
  written), the one computed from the upstream row stored now wins; documents the upstream no
  longer has are dropped.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from embedding_assets.lib.frames import TS, conform

TOMBSTONE_SCHEMA = pl.Schema({"doc_id": pl.String, "read_at": TS})
# How long a deletion is remembered: a run that read a document before it was deleted and
# writes more than this later can bring it back (the daily sweep removes it again).
TOMBSTONE_RETENTION = dt.timedelta(days=7)
_OLDEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def tombstones(doc_ids: list[str], read_at: dt.datetime) -> pl.DataFrame:
    return pl.DataFrame({"doc_id": doc_ids, "read_at": [read_at] * len(doc_ids)}, schema=TOMBSTONE_SCHEMA)


def latest_reads(
    current: pl.DataFrame | None,
    current_deleted: pl.DataFrame | None,
    new: pl.DataFrame,
    new_deleted: pl.DataFrame | None = None,
    *,
    scanned_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Merge a write of snapshot rows into the stored ones: ``(live rows, tombstones)``.

    ``scanned_at``: ``new`` is a full scan of the shard started then, so every document it does
    not hold was absent at that time. Equal read times go to the write. Rows without a doc_id
    (reported, never embedded) come from the latest full scan. Tombstones older than
    TOMBSTONE_RETENTION before ``now`` are forgotten.
    """
    current = conform(current, new.schema) if current is not None else new.clear()
    current_deleted = current_deleted if current_deleted is not None else TOMBSTONE_SCHEMA.to_frame()
    new_deleted = new_deleted if new_deleted is not None else TOMBSTONE_SCHEMA.to_frame()
    if scanned_at is not None:
        known = pl.concat([current["doc_id"], current_deleted["doc_id"]]).drop_nulls().unique()
        absent = known.filter(~known.is_in(new["doc_id"].drop_nulls().implode()))
        new_deleted = pl.concat([new_deleted, tombstones(absent.to_list(), scanned_at)])

    def observations(frame: pl.DataFrame, source: int, live: bool) -> pl.DataFrame:
        return frame.filter(pl.col("doc_id").is_not_null()).select(
            "doc_id",
            pl.col("read_at").fill_null(_OLDEST).alias("_at"),
            pl.lit(source).alias("_source"),
            pl.lit(live).alias("_live"),
        )

    winners = (
        pl.concat(
            [
                observations(current, 0, True),
                observations(current_deleted, 0, False),
                observations(new, 1, True),
                observations(new_deleted, 1, False),
            ]
        )
        .sort("doc_id", "_at", "_source", "_live")
        .unique("doc_id", keep="last")
    )
    kept = winners.filter(pl.col("_live")).select("doc_id", "_source")
    rows = pl.concat(
        [
            current.filter(pl.col("doc_id").is_not_null()).with_columns(pl.lit(0).alias("_source")),
            new.filter(pl.col("doc_id").is_not_null())
            .select(current.columns)
            .with_columns(pl.lit(1).alias("_source")),
        ]
    ).join(kept, on=["doc_id", "_source"], how="semi")
    unnamed = (new if scanned_at is not None else current).filter(pl.col("doc_id").is_null())
    live = pl.concat([rows.drop("_source"), unnamed.select(current.columns)]).sort("doc_id", nulls_last=True)
    deleted = winners.filter(~pl.col("_live")).select("doc_id", pl.col("_at").alias("read_at"))
    if now is not None:
        deleted = deleted.filter(pl.col("read_at") >= now - TOMBSTONE_RETENTION)
    return live, deleted.sort("doc_id")


def follow_upstream(
    current: pl.DataFrame | None, new: pl.DataFrame, upstream: pl.DataFrame, match: list[str]
) -> pl.DataFrame:
    """Merge a write of derived rows into the stored ones, both checked against ``upstream``
    (its rows as stored now, at least doc_id and ``match``).

    Per document, the row agreeing with upstream on ``match`` wins, the write's on a tie;
    documents upstream does not have are dropped. Rows without a doc_id come from the write.
    """
    if current is None or current.height == 0:
        candidates = new.with_columns(pl.lit(1).alias("_source"))
    else:
        candidates = pl.concat(
            [
                conform(current, new.schema).with_columns(pl.lit(0).alias("_source")),
                new.with_columns(pl.lit(1).alias("_source")),
            ]
        )
    ups = upstream.filter(pl.col("doc_id").is_not_null()).select(
        "doc_id", *[pl.col(c).alias(f"_up_{c}") for c in match]
    )
    agrees = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"_up_{c}")) for c in match])
    named = (
        candidates.filter(pl.col("doc_id").is_not_null())
        .join(ups, on="doc_id", how="inner")
        .with_columns(agrees.cast(pl.Int8).alias("_agrees"))
        .sort("doc_id", "_agrees", "_source")
        .unique("doc_id", keep="last")
        .select(new.columns)
    )
    unnamed = new.filter(pl.col("doc_id").is_null())
    return pl.concat([named, unnamed]).sort("doc_id", nulls_last=True)
