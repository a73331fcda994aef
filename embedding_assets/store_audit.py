"""The store as readers see it, audited against MongoDB: the active version's entries.

The checks (defs/checks.py), the repair sensor, the metrics endpoint and the CLI all read these
findings, so the UI, Prometheus and the repairs describe one thing: the store, not the run that
last wrote it. Two modes: ``full`` reads every document and every entry; ``sampled`` reads a
random sample of documents (and of entries, for extras) and states its 95% bounds.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
from upath import UPath

from embedding_assets import settings
from embedding_assets.lib import audit, codec
from embedding_assets.lib import quantization as q
from embedding_assets.lib.staleness import sla_breaches
from embedding_assets.lib.vectors import vector_problems
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.sources.mongo import MongoDocumentSource
from embedding_assets.stores.control_plane import (
    ControlPlaneLost,
    VersionCopy,
    buckets_key,
    calibration_key,
)
from embedding_assets.stores.dead_letters import FAILED
from embedding_assets.stores.feature_store import FeatureStore
from embedding_assets.stores.redis_entries import TOMBSTONE, RedisEntryStore, bucket_key, is_cluster

MODES = ("sampled", "full")
DOCUMENTS = "documents"  # a delta run's own documents (not a store-wide mode: never saved)
VALIDITY_SAMPLE = 500  # entries decoded as clients decode them
RECHECK_LIMIT = 500  # sampled documents whose entry looks wrong, refetched with all their copies
EXTRA_SAMPLE = 1000  # entries a sampled audit looks up for their document (bound: 0.4% at 95%)
SCAN_BATCH = 50_000
STALE_LIMIT = 0.01  # the promise: under 1% of entries older than their document or 24 h
SAMPLE_LIMIT = 10  # ids shown per finding in metadata


@dataclass
class Findings:
    """What an audit found; ids are complete in full mode, the sampled ones otherwise."""

    version: str | None
    mode: str
    at: int  # the feature store's clock, seconds
    seconds: float = 0.0
    population: int = 0  # documents in the collection (with text, in full mode)
    examined: int = 0  # documents with text examined
    entries_examined: int = 0  # entries examined for extras
    entries_total: int = 0  # entries of the version (full mode: counted; sampled: estimated)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # present, older than their document or 24 h
    older_than_document: int = 0
    older_than_24h: int = 0
    extra: list[str] = field(default_factory=list)
    ages: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    with_text: int = 0  # denominator of the failed ratio
    vectors_checked: int = 0
    invalid_vectors: list[str] = field(default_factory=list)
    control_problems: list[str] = field(default_factory=list)
    bytes_per_entry: float = 0.0
    in_flight: int = 0  # documents changed within the grace window: not judged yet
    # entries whose document was found gone less than the grace ago: not judged yet, but
    # repaired at once (the repair run reads the source, so it removes them only if their
    # documents are still gone; a deletion in flight is harmless)
    extra_in_flight: list[str] = field(default_factory=list)

    # -- ratios, 0..1 ------------------------------------------------------------------------
    @property
    def covered(self) -> int:
        return self.examined - len(self.missing) - len(self.mismatched)

    @property
    def coverage_ratio(self) -> float:
        return self.covered / self.examined if self.examined else (0.0 if self.control_problems else 1.0)

    @property
    def present(self) -> int:
        return self.examined - len(self.missing)

    @property
    def stale_ratio(self) -> float:
        return len(self.stale) / self.present if self.present else 0.0

    @property
    def extra_ratio(self) -> float:
        return len(self.extra) / self.entries_examined if self.entries_examined else 0.0

    @property
    def failed_ratio(self) -> float:
        return self.failed / self.with_text if self.with_text else 0.0

    def bound(self, found: int, examined: int) -> float:
        """The 95% upper bound on the store's share (full mode: the share itself)."""
        if self.mode == "full":
            return found / examined if examined else 0.0
        return audit.upper_bound(found, examined)

    def repairs(self) -> list[str]:
        """Documents whose entry must be rewritten or removed: what the repair sensor sends."""
        wrong = set(self.missing) | set(self.mismatched) | set(self.stale) | set(self.extra)
        return sorted(wrong | set(self.extra_in_flight))

    # -- as checks -----------------------------------------------------------------------------
    def outcomes(self, max_error_rate: float) -> dict[str, audit.Outcome]:
        scope = {"mode": self.mode, "version": self.version or "none", "audited_at": self.at}
        wrong = len(self.missing) + len(self.mismatched)
        how = f"{self.examined} documents" + (" sampled" if self.mode == "sampled" else "")
        return {
            "coverage": audit.Outcome(
                wrong == 0 and not self.control_problems,
                f"{self.covered}/{self.examined} covered, {len(self.missing)} missing, "
                f"{len(self.mismatched)} mismatched ({how}; store-wide, active version)"
                + (f"; {self.in_flight} changed too recently to judge" if self.in_flight else ""),
                {
                    **scope,
                    "documents": self.population,
                    "examined": self.examined,
                    "covered": self.covered,
                    "missing": len(self.missing),
                    "mismatched": len(self.mismatched),
                    "in_flight": self.in_flight,
                    "coverage_ratio": self.coverage_ratio,
                    "uncovered_upper_bound_95": self.bound(wrong, self.examined),
                    "missing_sample": self.missing[:SAMPLE_LIMIT],
                    "mismatched_sample": self.mismatched[:SAMPLE_LIMIT],
                },
            ),
            "staleness": audit.Outcome(
                self.stale_ratio < STALE_LIMIT,
                f"{len(self.stale)} of {self.present} entries older than their document or "
                f"{int(settings.get('EA_STALE_SECONDS')) / 3600:g} h "
                f"({self.stale_ratio:.3%}; limit {STALE_LIMIT:.0%}); age p50 "
                f"{self.ages.get('p50', 0) / 3600:.1f} h, p99 {self.ages.get('p99', 0) / 3600:.1f} h",
                {
                    **scope,
                    "entries": self.present,
                    "stale": len(self.stale),
                    "older_than_document": self.older_than_document,
                    "older_than_24h": self.older_than_24h,
                    "stale_ratio": self.stale_ratio,
                    "stale_upper_bound_95": self.bound(len(self.stale), self.present),
                    **{f"age_{k}_seconds": v for k, v in self.ages.items()},
                    "sample": self.stale[:SAMPLE_LIMIT],
                },
            ),
            "orphans": audit.Outcome(
                not self.extra,
                f"{len(self.extra)} of {self.entries_examined} entries examined belong to no live document"
                + (
                    f"; {len(self.extra_in_flight)} more of documents deleted too recently to judge"
                    if self.extra_in_flight
                    else ""
                ),
                {
                    **scope,
                    "entries": self.entries_total,
                    "examined": self.entries_examined,
                    "orphans": len(self.extra),
                    "deletions_in_flight": len(self.extra_in_flight),
                    "orphan_upper_bound_95": self.bound(len(self.extra), self.entries_examined),
                    "sample": self.extra[:SAMPLE_LIMIT],
                },
            ),
            "failed_documents": audit.Outcome(
                self.failed_ratio <= max_error_rate,
                f"{self.failed} of {self.with_text} documents failed after retries "
                f"({self.failed_ratio:.4%}; limit {max_error_rate:.2%})",
                {
                    **scope,
                    "failed": self.failed,
                    "documents": self.with_text,
                    "failed_ratio": self.failed_ratio,
                },
            ),
            "entry_validity": audit.Outcome(
                not self.invalid_vectors,
                f"{len(self.invalid_vectors)} of {self.vectors_checked} entries decoded as readers do "
                "are not valid vectors",
                {**scope, "checked": self.vectors_checked, "sample": self.invalid_vectors[:SAMPLE_LIMIT]},
            ),
            "control_plane": audit.Outcome(
                not self.control_problems,
                "; ".join(self.control_problems)
                or "active pointer, version, layout and calibration present and equal to the copy",
                {**scope, "problems": len(self.control_problems)},
            ),
        }

    # -- kept beside the shard state, for the repair sensor and the metrics -----------------------
    def save(self, folder: str | UPath, max_error_rate: float) -> None:
        """The summary (with each check's outcome, which delta runs carry), and the repairs."""
        base = UPath(folder)
        base.mkdir(parents=True, exist_ok=True)
        # two audits can end in the same second (a scheduled one and one a restart asked for):
        # each has its own id and repairs, or the repair sensor takes the second for the first
        audit_id = f"{self.at}-{uuid.uuid4().hex[:8]}"
        pl.DataFrame({"doc_id": self.repairs()}, schema={"doc_id": pl.String}).write_parquet(
            str(base / f"repairs-{audit_id}.parquet")
        )
        summary = {k: v for k, v in asdict(self).items() if not isinstance(v, list)}
        summary |= {k: len(v) for k, v in asdict(self).items() if isinstance(v, list)}
        if self.mode == DOCUMENTS:
            raise ValueError("a delta run's audit of its own documents is not a store-wide finding")
        summary |= {
            "coverage_ratio": self.coverage_ratio,
            "stale_ratio": self.stale_ratio,
            "extra_ratio": self.extra_ratio,
            "failed_ratio": self.failed_ratio,
            "id": audit_id,
            "repairs_file": f"repairs-{audit_id}.parquet",
            "checks": {
                name: {"passed": o.passed, "description": o.description}
                for name, o in self.outcomes(max_error_rate).items()
            },
        }
        for name in ("latest.json", f"latest-{self.mode}.json"):
            tmp = base / f".{name}.{time.time_ns()}.tmp"
            tmp.write_text(json.dumps(summary))
            tmp.rename(base / name)
        for old in base.glob("repairs-*.parquet"):  # the last few stay for the sensor
            if old.name != summary["repairs_file"] and time.time() - old.stat().st_mtime > 3600:
                old.unlink(missing_ok=True)


def latest(folder: str | UPath, mode: str | None = None) -> dict | None:
    """The summary of the last audit (of ``mode``, if given) saved under ``folder``."""
    path = UPath(folder) / ("latest.json" if mode is None else f"latest-{mode}.json")
    return json.loads(path.read_text()) if path.exists() else None


def repairs_of(folder: str | UPath, summary: dict) -> list[str]:
    path = UPath(folder) / summary["repairs_file"]
    return pl.read_parquet(str(path))["doc_id"].to_list() if path.exists() else []


def audit_store(
    source: MongoDocumentSource,
    store: FeatureStore,
    *,
    mode: str = "sampled",
    sample_size: int = 10_000,
    configured: EmbeddingSpec | None = None,
    copy_of: dict[str, VersionCopy] | None = None,
    seed: int | None = None,
    doc_ids: list[str] | None = None,
    gone_since: dict[str, int] | None = None,
) -> Findings:
    """Audit the active version (or, with none, ``configured``) against the collection.

    ``copy_of``: the versions' control-key copies (control_plane.VersionCopy) by tag, so that a
    store that lost its control keys is still read (and the loss reported), never guessed.
    ``gone_since``: entries found without a live document, and when first (store clock), from the
    audits before; updated in place. With it, an entry is an orphan only once its document has
    been gone for EA_AUDIT_GRACE_SECONDS (a younger deletion is the deletions sensor's to apply).
    """
    if mode not in MODES and not (mode == DOCUMENTS and doc_ids is not None):
        raise ValueError(f"audit mode must be one of {MODES}, got {mode!r}")
    started = time.perf_counter()
    now = store.entries.server_time()
    copies = copy_of or {}
    problems: list[str] = []
    active = store.control.active_version()
    versions = store.control.versions()
    tag = active or (configured.tag if configured else None)
    if active is None:
        problems.append("no active version (doc_emb_meta:active is missing)")
    if tag is None:
        return Findings(None, mode, now, time.perf_counter() - started, control_problems=problems)
    copy = copies.get(tag)
    spec = versions.get(tag) or (copy.spec if copy else None) or configured
    if tag not in versions:
        problems.append(f"version {tag} is not registered")
    if spec is None or spec.tag != tag:
        problems.append(f"the settings of version {tag} are unknown here")
        return Findings(tag, mode, now, time.perf_counter() - started, control_problems=problems)
    buckets, calibration = _control(store, spec, copy, problems)
    entries = RedisEntryStore(store.client, lambda _v: buckets or 1)
    findings = Findings(tag, mode, now, control_problems=problems)
    rng = random.Random(seed)

    if mode == "full":
        expected = _expected_full(source, spec)
        findings.population = expected.height
    elif mode == DOCUMENTS:
        expected = _expected_of(source, spec, doc_ids or [])
        findings.population = source.estimated_count()
    else:
        docs = source.sample_documents(sample_size, seed=rng.randrange(2**31))
        expected = audit.latest_copies(audit.expected_rows(docs, spec))
        findings.population = source.estimated_count()
    if mode == "sampled" and buckets:  # a sampled copy may be an older duplicate: recheck
        suspects = _classify(findings, expected, entries, tag, spec, now, dry_run=True)[:RECHECK_LIMIT]
        if suspects:
            rechecked = _expected_of(source, spec, suspects)
            expected = pl.concat([expected.filter(~pl.col("doc_id").is_in(suspects)), rechecked])
    judged = expected
    if mode != DOCUMENTS:  # a run's own documents are judged whatever their age
        judged, findings.in_flight = audit.settled(expected, now, int(settings.get("EA_AUDIT_GRACE_SECONDS")))
    present = _classify(findings, judged, entries, tag, spec, now) if buckets else []
    if not buckets:
        findings.examined = judged.filter(pl.col("content_hash").is_not_null()).height
        findings.missing = sorted(judged.filter(pl.col("content_hash").is_not_null())["doc_id"].to_list())

    live = set(expected.filter(pl.col("content_hash").is_not_null())["doc_id"].to_list())
    if buckets and mode == "full":
        stored = list(entries.scan_ids(tag))
        findings.entries_total = findings.entries_examined = len(stored)
        findings.extra = sorted(d for d in stored if d not in live)
    elif buckets and mode == DOCUMENTS:  # the run's documents that must have no entry
        gone = [d for d in doc_ids or [] if d not in live]
        findings.entries_examined = len(doc_ids or [])
        findings.extra = sorted(d for d, h in zip(gone, entries.read_headers(tag, gone), strict=True) if h)
    elif buckets:
        sampled = _sample_entries(store, tag, buckets, min(sample_size, EXTRA_SAMPLE), rng)
        findings.entries_examined = len(sampled)
        alive = source.live_ids(sampled)
        findings.extra = sorted(d for d in sampled if d not in alive)
        findings.entries_total = _estimate_entries(store, tag, buckets, rng)

    if gone_since is not None and buckets and mode != DOCUMENTS:
        grace = int(settings.get("EA_AUDIT_GRACE_SECONDS"))
        findings.extra, findings.extra_in_flight = _confirm_gone(
            findings.extra, gone_since, source, entries, tag, now, grace
        )

    failed = {d.doc_id for d in store.control.dead_letters(tag).all() if d.kind == FAILED}
    if mode == "full":
        findings.failed, findings.with_text = len(failed & live), len(live)
    else:  # dead letters are few: counted whole, over the collection's size
        findings.failed, findings.with_text = len(failed), max(findings.population, len(failed))

    findings.vectors_checked, findings.invalid_vectors = _validity(entries, spec, calibration, present, rng)
    if findings.entries_total and buckets:
        findings.bytes_per_entry = _bytes_per_entry(store, tag, buckets, rng)
    findings.missing.sort()
    findings.mismatched.sort()
    findings.stale.sort()
    findings.seconds = round(time.perf_counter() - started, 3)
    return findings


def _confirm_gone(
    found: list[str],
    gone_since: dict[str, int],
    source: MongoDocumentSource,
    entries: RedisEntryStore,
    tag: str,
    now: int,
    grace: int,
) -> tuple[list[str], list[str]]:
    """``(orphans, in flight)``: of the entries found without a document now and those found
    before (looked at again: still an entry, still no document), the ones first found at least
    ``grace`` seconds ago are orphans; the others are in flight."""
    gone = set(found)
    earlier = [d for d in gone_since if d not in gone][:RECHECK_LIMIT]
    if earlier:
        alive = source.live_ids(earlier)
        headers = entries.read_headers(tag, earlier)
        gone |= {d for d, h in zip(earlier, headers, strict=True) if h is not None and d not in alive}
    kept = {d: gone_since.get(d, now) for d in gone}
    gone_since.clear()
    gone_since.update(kept)
    orphans = sorted(d for d, first in kept.items() if now - first >= grace)
    return orphans, sorted(set(kept) - set(orphans))


def load_gone_since(folder: str | UPath) -> dict[str, int]:
    path = UPath(folder) / "gone-since.json"
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def save_gone_since(folder: str | UPath, gone_since: dict[str, int]) -> None:
    base = UPath(folder)
    base.mkdir(parents=True, exist_ok=True)
    (base / "gone-since.json").write_text(json.dumps(gone_since))


def _control(
    store: FeatureStore, spec: EmbeddingSpec, copy: VersionCopy | None, problems: list[str]
) -> tuple[int | None, q.Int8Calibration | None]:
    """The version's bucket count and calibration, from Redis or else its copy; what is missing
    or differs is a problem."""
    try:
        buckets: int | None = store.control.buckets(spec.tag)
    except ControlPlaneLost:
        problems.append(f"{buckets_key(spec.tag)} is missing")
        buckets = copy.buckets if copy else None
    else:
        if copy and copy.buckets != buckets:
            problems.append(f"{buckets_key(spec.tag)} is {buckets}, the copy says {copy.buckets}")
    raw = None
    if spec.quantization == q.INT8:
        raw = store.client.get(calibration_key(spec.tag))
        if raw is None:
            problems.append(f"{calibration_key(spec.tag)} is missing")
            raw = copy.calibration if copy else None
        elif copy and copy.calibration and copy.calibration != raw:
            problems.append(f"{calibration_key(spec.tag)} differs from the copy")
    return buckets, q.Int8Calibration.from_bytes(raw) if raw else None


def _expected_full(source: MongoDocumentSource, spec: EmbeddingSpec) -> pl.DataFrame:
    parts, batch = [], []
    for doc in source.scan_all():
        batch.append(doc)
        if len(batch) >= SCAN_BATCH:
            parts.append(audit.expected_rows(batch, spec))
            batch = []
    parts.append(audit.expected_rows(batch, spec))
    return audit.latest_copies(pl.concat(parts))


def _expected_of(source: MongoDocumentSource, spec: EmbeddingSpec, doc_ids: list[str]) -> pl.DataFrame:
    """Every copy of these doc_ids, resolved as the pipeline resolves duplicates."""
    return audit.latest_copies(audit.expected_rows(source.iter_by_ids(doc_ids), spec))


def _classify(
    findings: Findings,
    expected: pl.DataFrame,
    entries: RedisEntryStore,
    tag: str,
    spec: EmbeddingSpec,
    now: int,
    *,
    dry_run: bool = False,
) -> list[str]:
    """Each expected document's entry: missing, mismatched, stale or fine, into ``findings``
    (``dry_run``: only the ids that are not fine). Returns the ids of present entries."""
    with_text = expected.filter(pl.col("content_hash").is_not_null())
    ids = with_text["doc_id"].to_list()
    headers = entries.read_headers(tag, ids)
    if dry_run:
        return [
            d
            for d, h, c, m in zip(
                ids,
                headers,
                with_text["content_hash"].to_list(),
                with_text["modified_ms"].to_list(),
                strict=True,
            )
            if h is None or h.content_hash != c or h.version_id != spec.version_id or h.source_ms < m
        ]
    findings.examined = len(ids)
    ages: list[int] = []
    present: list[str] = []
    sla = int(settings.get("EA_STALE_SECONDS"))
    for doc_id, header, chash, modified in zip(
        ids, headers, with_text["content_hash"].to_list(), with_text["modified_ms"].to_list(), strict=True
    ):
        if header is None:
            findings.missing.append(doc_id)
            continue
        if header.content_hash != chash or header.version_id != spec.version_id:
            findings.mismatched.append(doc_id)
        present.append(doc_id)
        ages.append(max(0, now - header.computed_at))
        behind, aged = sla_breaches(
            header, content_hash=chash, source_ms=modified, now=now, sla_seconds=sla
        )
        findings.older_than_document += behind
        findings.older_than_24h += aged
        if behind or aged:
            findings.stale.append(doc_id)
    findings.ages = audit.age_quantiles(ages)
    return present


def _bucket_sample(buckets: int, wanted: int, rng: random.Random) -> list[int]:
    return rng.sample(range(buckets), min(buckets, wanted))


def _bucket_key(store: FeatureStore, tag: str, bucket: int) -> str:
    return bucket_key(tag, bucket, is_cluster(store.client))


def _random_buckets(
    store: FeatureStore, tag: str, buckets: int, rng: random.Random, command: str
) -> Iterator[tuple[int, object]]:
    """``(bucket, reply)`` of ``command`` (hkeys, hlen) over the version's buckets in random
    order, 500 per pipeline; the caller stops when it has enough."""
    order = list(range(buckets))
    rng.shuffle(order)
    for chunk in _chunks(order, 500):
        pipe = store.client.pipeline(transaction=False)
        for bucket in chunk:
            getattr(pipe, command)(_bucket_key(store, tag, bucket))
        yield from zip(chunk, pipe.execute(), strict=True)


def _sample_entries(store: FeatureStore, tag: str, buckets: int, size: int, rng: random.Random) -> list[str]:
    """About ``size`` doc_ids with an entry: whole buckets in random order until enough (every
    bucket of a sparse store)."""
    ids: list[str] = []
    marker = TOMBSTONE.encode()
    for _, fields in _random_buckets(store, tag, buckets, rng, "hkeys"):
        ids += [f.decode() for f in fields if not f.startswith(marker)]  # type: ignore[attr-defined]
        if len(ids) >= size:
            break
    return ids[:size]


def _estimate_entries(store: FeatureStore, tag: str, buckets: int, rng: random.Random) -> int:
    chosen = _bucket_sample(buckets, 256, rng)
    pipe = store.client.pipeline(transaction=False)
    for bucket in chosen:
        pipe.hlen(_bucket_key(store, tag, bucket))
    return round(sum(pipe.execute()) / len(chosen) * buckets) if chosen else 0


def _bytes_per_entry(store: FeatureStore, tag: str, buckets: int, rng: random.Random) -> float:
    """MEMORY USAGE of up to 64 non-empty buckets (random) over their entries: what one entry
    costs the server, bucket overhead included."""
    chosen: list[int] = []
    for bucket, count in _random_buckets(store, tag, buckets, rng, "hlen"):
        if count:
            chosen.append(bucket)
        if len(chosen) >= 64:
            break
    pipe = store.client.pipeline(transaction=False)
    for bucket in chosen[:64]:
        pipe.memory_usage(_bucket_key(store, tag, bucket), samples=0)
        pipe.hlen(_bucket_key(store, tag, bucket))
    values = pipe.execute()
    count = sum(values[1::2])
    return round(sum(v or 0 for v in values[0::2]) / count, 1) if count else 0.0


def _validity(
    entries: RedisEntryStore,
    spec: EmbeddingSpec,
    calibration: q.Int8Calibration | None,
    present: list[str],
    rng: random.Random,
) -> tuple[int, list[str]]:
    """Entries decoded as a client decodes them: right size, finite, not constant, near unit."""
    ids = rng.sample(present, min(len(present), VALIDITY_SAMPLE))
    bad: list[str] = []
    for doc_id, raw in zip(ids, entries.read(spec.tag, ids), strict=True):
        if raw is None:
            continue  # rewritten or removed since the headers were read
        try:
            header = codec.decode_header(raw)
            if header.dimension != spec.dimension or header.codec != spec.quantization:
                raise codec.CodecError("another dimension or codec than the version's")
            vector = q.dequantize(
                header.codec, codec.decode_payload(raw, header), calibration, header.dimension
            )
        except (codec.CodecError, ValueError):
            bad.append(doc_id)
            continue
        problems = vector_problems(np.asarray(vector, dtype=np.float32)[None, :])
        norm = float(np.linalg.norm(vector))
        if problems["non_finite"][0] or problems["constant"][0] or not 0.8 < norm < 1.2:
            bad.append(doc_id)
    return len(ids), sorted(bad)


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
