"""What the checks and ``activate`` decide, as plain functions over frames and entry headers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from embedding_assets.lib.codec import RecordHeader
from embedding_assets.lib.deletion import is_tombstone
from embedding_assets.lib.snapshot import snapshot_row
from embedding_assets.lib.staleness import sla_breaches
from embedding_assets.lib.text import expected_content_hash
from embedding_assets.lib.vectors import vector_problems
from embedding_assets.lib.versioning import EmbeddingSpec

SAMPLE = 10
SLA_SECONDS = 24 * 3600


@dataclass
class Outcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def expected_hashes(snapshot: pl.DataFrame, spec: EmbeddingSpec) -> tuple[dict[str, int], int]:
    """doc_id -> the content hash its entry must carry under ``spec``, from snapshot rows; and how
    many documents get no entry (no text, rejected)."""
    expected: dict[str, int] = {}
    without = 0
    for row in snapshot.filter(pl.col("doc_id").is_not_null()).iter_rows(named=True):
        chash = expected_content_hash(row["title"], row["body"], spec)
        if chash is None:
            without += 1
        else:
            expected[row["doc_id"]] = chash
    return expected, without


def vector_validity(frames: Iterable[pl.DataFrame], dimension: int) -> Outcome:
    """Dimension, finite values, unit norm, not constant: what may be published."""
    bad: dict[str, list[str]] = {"dimension": [], "non_finite": [], "norm": [], "constant": []}
    total = 0
    for frame in frames:
        if frame.height == 0:
            continue
        total += frame.height
        ids = frame["doc_id"].to_list()
        if frame.schema["vector"].size != dimension:  # type: ignore[union-attr]
            bad["dimension"] += ids
            continue
        for problem, mask in vector_problems(frame["vector"].to_numpy()).items():
            bad[problem] += [ids[i] for i in mask.nonzero()[0]]
    failures = sum(len(v) for v in bad.values())
    metadata = {"vectors": total, **{f"bad_{k}": len(v) for k, v in bad.items()}}
    metadata["sample"] = [d for v in bad.values() for d in v][:SAMPLE]
    return Outcome(failures == 0, f"{failures} invalid of {total} vectors", metadata)


def error_rate(attempted: set[str], failed: set[str], threshold: float) -> Outcome:
    """Failed documents (after retries) over documents that should have a vector."""
    failed &= attempted
    rate = len(failed) / len(attempted) if attempted else 0.0
    return Outcome(
        rate <= threshold,
        f"{len(failed)} of {len(attempted)} documents failed ({rate:.4%}; limit {threshold:.2%})",
        {
            "attempted": len(attempted),
            "failed": len(failed),
            "error_rate": rate,
            "threshold": threshold,
            "sample": sorted(failed)[:SAMPLE],
        },
    )


def coverage(
    expected: Mapping[str, int], headers: Mapping[str, RecordHeader | None], version_id: int
) -> Outcome:
    """Every document with text has an entry of the version whose content hash matches."""
    missing = sorted(d for d in expected if headers.get(d) is None)
    mismatched = sorted(
        d
        for d, h in headers.items()
        if h is not None and d in expected and (h.content_hash != expected[d] or h.version_id != version_id)
    )
    covered = len(expected) - len(missing) - len(mismatched)
    return Outcome(
        not missing and not mismatched,
        f"{covered}/{len(expected)} covered, {len(missing)} missing, {len(mismatched)} mismatched",
        {
            "documents": len(expected),
            "covered": covered,
            "missing": len(missing),
            "mismatched": len(mismatched),
            "missing_sample": missing[:SAMPLE],
            "mismatched_sample": mismatched[:SAMPLE],
        },
    )


def staleness(
    expected: Mapping[str, tuple[int, int]],
    headers: Mapping[str, RecordHeader | None],
    *,
    now: int,
    sla_seconds: int = SLA_SECONDS,
    threshold: float = 0.01,
) -> Outcome:
    """Entries older than their document (other text, earlier modified_at) or than the SLA."""
    entries = stale = older_than_document = older_than_sla = 0
    sample = []
    for doc_id, header in headers.items():
        if header is None or doc_id not in expected:
            continue
        entries += 1
        chash, modified_ms = expected[doc_id]
        behind, aged = sla_breaches(
            header, content_hash=chash, source_ms=modified_ms, now=now, sla_seconds=sla_seconds
        )
        older_than_document += behind
        older_than_sla += aged
        if behind or aged:
            stale += 1
            sample.append(doc_id)
    fraction = stale / entries if entries else 0.0
    return Outcome(
        fraction < threshold,
        f"{stale} of {entries} entries stale ({fraction:.3%}; limit {threshold:.0%})",
        {
            "entries": entries,
            "stale": stale,
            "older_than_document": older_than_document,
            "older_than_24h": older_than_sla,
            "stale_fraction": fraction,
            "sample": sorted(sample)[:SAMPLE],
        },
    )


def orphans(orphan_ids: list[str], scope: str) -> Outcome:
    return Outcome(
        not orphan_ids,
        f"{len(orphan_ids)} entries of documents that no longer exist ({scope})",
        {"orphans": len(orphan_ids), "scope": scope, "sample": sorted(orphan_ids)[:SAMPLE]},
    )


# -- the store-wide audit (audit/store.py): figures over a full scan or a sample ------------------
Z_95 = 1.959964  # two-sided 95% normal quantile


def upper_bound(found: int, examined: int, z: float = Z_95) -> float:
    """The Wilson score upper bound on a proportion: with ``found`` of ``examined`` sampled
    documents bad, the store's true share is below this with 95% confidence (3.8/n when none)."""
    if examined == 0:
        return 1.0
    p = found / examined
    denominator = 1 + z * z / examined
    centre = p + z * z / (2 * examined)
    spread = z * math.sqrt(p * (1 - p) / examined + z * z / (4 * examined * examined))
    return min(1.0, (centre + spread) / denominator)


def age_quantiles(ages_s: Sequence[int], quantiles: Sequence[float] = (0.5, 0.95, 0.99)) -> dict[str, float]:
    """Entry ages (seconds) at the given quantiles, and the oldest."""
    if not ages_s:
        return {**{f"p{round(q * 100)}": 0.0 for q in quantiles}, "max": 0.0}
    ordered = sorted(ages_s)
    last = len(ordered) - 1
    out = {f"p{round(q * 100)}": float(ordered[min(last, round(q * last))]) for q in quantiles}
    out["max"] = float(ordered[-1])
    return out


def latest_copies(frame: pl.DataFrame) -> pl.DataFrame:
    """Of rows (doc_id, modified_ms, source_id, content_hash), the latest copy of each doc_id:
    what the pipeline keeps of duplicates (snapshot.finish_snapshot)."""
    return (
        frame.filter(pl.col("doc_id").is_not_null())
        .sort("modified_ms", "source_id", nulls_last=False)
        .unique("doc_id", keep="last")
    )


def expected_rows(docs: Iterable[dict], spec: EmbeddingSpec) -> pl.DataFrame:
    """Source documents (tombstones dropped) as (doc_id, modified_ms, source_id, content_hash):
    the content hash each entry must carry, null where the document gets no entry by rule."""
    rows = []
    for doc in docs:
        if is_tombstone(doc):
            continue
        row = snapshot_row(doc)
        rows.append(
            (
                row["doc_id"],
                row["modified_at"] or 0,
                row["source_id"],
                expected_content_hash(row["title"], row["body"], spec),
            )
        )
    return pl.DataFrame(rows, schema=EXPECTED_SCHEMA, orient="row")


EXPECTED_SCHEMA = pl.Schema(
    {"doc_id": pl.String, "modified_ms": pl.Int64, "source_id": pl.String, "content_hash": pl.UInt64}
)


def settled(expected: pl.DataFrame, now: int, grace_seconds: int) -> tuple[pl.DataFrame, int]:
    """The rows to judge, and how many were left out: documents modified within the last
    ``grace_seconds`` (by the store's clock) are still on their way through the change sensor, so
    a missing or older entry for them is not yet a fault. Documents dated in the future are judged:
    they would otherwise stay out for as long as their date is ahead."""
    if grace_seconds <= 0:
        return expected, 0
    now_ms = now * 1000
    since = now_ms - grace_seconds * 1000
    # ``now`` is whole seconds: a document written within this second is not from the future
    recent = pl.col("modified_ms").is_between(since, now_ms + 1000, closed="right").fill_null(False)
    return expected.filter(~recent), expected.filter(recent).height
