"""The store as readers see it, audited against MongoDB: the active version's entries.

Two modes: ``full`` reads every document and every entry; ``sampled`` reads a random sample of
documents (and of entries, for extras) and states its 95% bounds. What it finds is a
``Findings`` (audit/findings.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import numpy as np
import polars as pl

from embedding_assets import settings
from embedding_assets.audit.early_sample import EarlySample
from embedding_assets.audit.findings import (
    DOCUMENTS,
    MODES,
    Findings,
)
from embedding_assets.lib import audit, codec
from embedding_assets.lib import quantization as q
from embedding_assets.lib.sampling import SeenKeys
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

VALIDITY_SAMPLE = 500  # entries decoded as clients decode them
RECHECK_LIMIT = 500  # sampled documents whose entry looks wrong, refetched with all their copies
EXTRA_SAMPLE = 1000  # entries a sampled audit looks up for their document (bound: 0.4% at 95%)
SCAN_BATCH = 50_000


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
    early: EarlySample | None = None,
) -> Findings:
    """Audit the active version (or, with none, ``configured``) against the collection.

    ``copy_of``: the versions' control-key copies (control_plane.VersionCopy) by tag, so that a
    store that lost its control keys is still read (and the loss reported), never guessed.
    ``gone_since``: entries found without a live document, and when first (store clock), from the
    audits before; updated in place. With it, an entry is an orphan only once its document has
    been gone for EA_AUDIT_GRACE_SECONDS (a younger deletion is the deletions sensor's to apply).
    ``early``: a sampled audit's documents read while the run published (audit/early_sample.py),
    used if read less than EA_AUDIT_GRACE_SECONDS ago.
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

    seen_live: SeenKeys | None = None
    if mode == "full":
        expected = _expected_full(source, spec)
        findings.population = expected.height
    elif mode == DOCUMENTS:
        expected = _expected_of(source, spec, doc_ids or [])
        findings.population = source.estimated_count()
    else:
        salt = rng.randrange(2**31)
        grace = int(settings.get("EA_AUDIT_GRACE_SECONDS"))
        if early is not None and now - early.read_at < grace:
            sample = early.sample
        else:
            sample = source.sample_documents(sample_size, seed=salt)
        docs, findings.population, seen_live = sample.documents, sample.population, sample.seen_live
        expected = audit.latest_copies(audit.expected_rows(docs, spec))
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
        # what the sample's scan saw live needs no query; the rest is asked (a document
        # written since the scan is found there)
        alive = seen_live.seen(sampled) if seen_live is not None else set()
        alive |= source.live_ids([d for d in sampled if d not in alive])
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
        behind, aged = sla_breaches(header, content_hash=chash, source_ms=modified, now=now, sla_seconds=sla)
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
