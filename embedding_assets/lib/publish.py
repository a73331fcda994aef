"""Step 4, feature_store_entries: one record per document, written only where the rules ask.

What an entry needs is ``staleness.classify``; records are ``codec.encode_records`` of the
quantized vector. The store is anything that satisfies ``protocols.EntryStore``; writes never
replace an entry of a later source state, deletes never remove one rewritten since it was seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q
from embedding_assets.lib.frames import TS, source_millis
from embedding_assets.lib.protocols import EntryStore
from embedding_assets.lib.sharding import shard_of
from embedding_assets.lib.staleness import NEEDS_WRITE, classify
from embedding_assets.lib.vectors import vectors_matrix
from embedding_assets.lib.versioning import EmbeddingSpec

# Vectors the first publish of a version calibrates int8 codes on.
CALIBRATION_SAMPLE = 20_000


def encode_entries(
    frame: pl.DataFrame,
    spec: EmbeddingSpec,
    calibration: q.Int8Calibration | None,
    computed_at: int | Sequence[int],
) -> list[bytes]:
    """Quantize and encode every row of a vector frame into a feature-store value.

    ``computed_at``: per row, when the state it was computed from was read (server seconds),
    or one time for all: what orders an entry against later reads and deletions."""
    if frame.height == 0:
        return []
    vectors = vectors_matrix(frame)
    if spec.quantization == q.INT8:
        if calibration is None:
            raise ValueError("int8 entries need the version's calibration")
        codes = q.quantize_int8(vectors, calibration)
    else:
        codes = q.quantize_binary(vectors)
    return codec.encode_records(
        codes,
        codec=spec.quantization,
        dimension=spec.dimension,
        version_id=spec.version_id,
        computed_at=computed_at,
        content_hashes=frame["content_hash"].to_numpy(),
        source_ms=np.asarray(source_millis(frame), dtype=np.int64),
    )


def calibration_sample(frames: Iterable[pl.DataFrame]) -> np.ndarray | None:
    """Up to CALIBRATION_SAMPLE vectors, reading ``frames`` lazily only as far as needed."""
    sample: list[pl.DataFrame] = []
    have = 0
    for frame in frames:
        sample.append(frame.head(CALIBRATION_SAMPLE - have))
        have += sample[-1].height
        if have >= CALIBRATION_SAMPLE:
            break
    return vectors_matrix(pl.concat(sample)) if have else None


@dataclass
class PublishStats:
    """What a publish did, by the staleness rules' categories."""

    states: dict[str, int] = field(default_factory=dict)
    written: int = 0
    superseded: int = 0
    bytes_written: int = 0
    deleted: int = 0
    failures: int = 0
    not_restored: int = 0  # lost entries of documents gone from the source: left gone

    def add(self, other: PublishStats) -> None:
        for state, n in other.states.items():
            self.states[state] = self.states.get(state, 0) + n
        self.written += other.written
        self.superseded += other.superseded
        self.bytes_written += other.bytes_written
        self.not_restored += other.not_restored
        self.deleted += other.deleted
        self.failures += other.failures


def with_read_times(vectors: pl.DataFrame, snapshot: pl.DataFrame | None) -> pl.DataFrame:
    """Each vector row with ``read_at``: when the snapshot read the state it was computed from
    (the snapshot row of the same doc_id and modified_at); null where that is not known."""
    if snapshot is None or "read_at" not in snapshot.columns:
        return vectors.with_columns(pl.lit(None, dtype=TS).alias("read_at"))
    reads = snapshot.select("doc_id", pl.col("modified_at").alias("_read_modified_at"), "read_at")
    joined = vectors.join(reads, on="doc_id", how="left")
    same_state = pl.col("modified_at").eq_missing(pl.col("_read_modified_at"))
    return joined.with_columns(
        pl.when(same_state).then(pl.col("read_at")).otherwise(None).alias("read_at")
    ).drop("_read_modified_at")


def _read_seconds(frame: pl.DataFrame) -> list[int | None]:
    if "read_at" not in frame.columns:
        return [None] * frame.height
    return (frame["read_at"].dt.epoch("ms") // 1000).to_list()


def publish(
    entries: EntryStore,
    spec: EmbeddingSpec,
    frame: pl.DataFrame,
    calibration: q.Int8Calibration | None,
    *,
    now: int,
    max_age_seconds: int,
    still_live: Callable[[list[str]], set[str]] | None = None,
    first_fill: bool = False,
) -> PublishStats:
    """Write what the staleness rules ask for, and only that, never over a newer entry.

    ``still_live``: asked which of the documents that have no entry still exist (None: all do,
    their rows were just read). A delta run publishes its whole shard from the shard state, so
    that entries a store lost come back at once; a row there may be of a document deleted while
    that run's deletion failed, which must not come back as an orphan.
    ``first_fill``: the version had no key when the run began publishing (``has_entries``), so
    the entries are not read before they are written: on an empty store that read found nothing,
    at a third of the publish's time. An entry another run wrote meanwhile is still never
    replaced by an older state (the writes are conditional) and is counted as superseded.
    """
    stats = PublishStats()
    if frame.height == 0:
        return stats
    headers = (
        [None] * frame.height if first_fill else entries.read_headers(spec.tag, frame["doc_id"].to_list())
    )
    reads = _read_seconds(frame)
    states = [
        classify(
            h,
            version_id=spec.version_id,
            content_hash=c,
            source_ms=m,
            now=now,
            max_age_seconds=max_age_seconds,
            read_s=r,
        )
        for h, c, m, r in zip(
            headers, frame["content_hash"].to_list(), source_millis(frame), reads, strict=True
        )
    ]
    for state in states:
        stats.states[state.value] = stats.states.get(state.value, 0) + 1
    needed = [s in NEEDS_WRITE for s in states]
    if still_live is not None:
        ids_all = frame["doc_id"].to_list()
        absent = [d for d, h, n in zip(ids_all, headers, needed, strict=True) if n and h is None]
        if absent:
            live = still_live(absent)
            stats.not_restored = len(set(absent) - live)
            kept = zip(ids_all, headers, needed, strict=True)
            needed = [n and (h is not None or d in live) for d, h, n in kept]
    todo = frame.filter(pl.Series(needed))
    todo_reads = [r for r, n in zip(reads, needed, strict=True) if n]
    values = encode_entries(todo, spec, calibration, [r or now for r in todo_reads])
    if not values:
        return stats
    ids = todo["doc_id"].to_list()
    stats.written = entries.write_if_not_older(spec.tag, ids, values, todo_reads)
    stats.superseded = len(values) - stats.written
    stats.bytes_written = sum(len(v) for v in values)
    # read back: an entry that is neither ours nor from a newer source state is a failure,
    # unless the document was seen deleted after this state of it was read
    missing: list[tuple[str, int | None]] = []
    for doc_id, header, chash, ms, read in zip(
        ids,
        entries.read_headers(spec.tag, ids),
        todo["content_hash"].to_list(),
        source_millis(todo),
        todo_reads,
        strict=True,
    ):
        if header is None:
            missing.append((doc_id, read))
        elif header.content_hash != chash and header.source_ms <= ms:
            stats.failures += 1
    seen = entries.deletions_seen(spec.tag, [d for d, _ in missing])
    stats.failures += sum(
        1 for (_, read), gone in zip(missing, seen, strict=True) if gone is None or (read or 0) > gone
    )
    return stats


def remove_entries(entries: EntryStore, version: str, doc_ids: list[str], seen_s: int = 0) -> int:
    """Delete entries of documents seen gone at ``seen_s`` (server seconds), unless computed
    from a later read, and remember the deletion; with ``seen_s`` 0 (not known), unless
    rewritten since we looked."""
    if not doc_ids:
        return 0
    headers = entries.read_headers(version, doc_ids)
    if seen_s:
        ms = [h.source_ms if h is not None else 0 for h in headers]
        return entries.delete_if_not_newer(version, doc_ids, ms, seen_s)
    present = [(d, h.source_ms) for d, h in zip(doc_ids, headers, strict=True) if h is not None]
    if not present:
        return 0
    return entries.delete_if_not_newer(version, [d for d, _ in present], [m for _, m in present])


def orphans_among(stored_ids: Iterable[str], live: set[str], shards: set[int], num_shards: int) -> list[str]:
    """Ids of the given shards whose document is not live: deletions nobody saw (a full run's
    stored ids) or that a delta run was told about."""
    return [d for d in stored_ids if d not in live and shard_of(d, num_shards) in shards]
