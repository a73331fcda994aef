"""The asset graph: document_snapshots -> chunked_text -> document_vectors -> feature_store_entries.

Every asset is partitioned by shard. A run either covers its shards fully (backfills, the
daily sweep: MongoDB is scanned once, entries nobody deleted are reconciled) or carries the
doc_ids a sensor saw change, which each asset merges into its shard's stored state. Work
whose content hash did not change is reused, never redone.

The intermediate assets' shards live in the shard-state store (``ShardStateResource``), their
only owner: each asset reads its upstream's shards there and writes its own as soon as each is
done, so a run over every shard holds one shard at a time. Assets return ``MaterializeResult``.
"""

import datetime as dt
import time
import warnings
from collections.abc import Callable, Iterator

import dagster as dg
import numpy as np
import polars as pl

from embedding_assets.defs.orphaned_runs import record_run_process
from embedding_assets.defs.partitions import (
    NUM_SHARDS,
    backfill_policy,
    run_shards,
    shard_partitions,
    work_keys,
)
from embedding_assets.defs.resources import (
    DocumentSourceResource,
    EmbeddingModelResource,
    FeatureStoreResource,
    ShardStateResource,
)
from embedding_assets.embedders.for_version import source_of
from embedding_assets.embedders.remote import ModelMismatch
from embedding_assets.lib import publish, quality, snapshot
from embedding_assets.lib.chunk import chunk_frame
from embedding_assets.lib.embed import vector_frame
from embedding_assets.lib.frames import dead_letter_id
from embedding_assets.lib.identity import doc_key
from embedding_assets.lib.merge import TOMBSTONE_RETENTION, tombstones
from embedding_assets.lib.protocols import Embedder
from embedding_assets.lib.quantization import INT8, Int8Calibration
from embedding_assets.lib.sharding import shard_key, shard_of
from embedding_assets.lib.vectors import split_invalid
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.stores.control_plane import (
    ControlPlane,
    ControlPlaneConflict,
    VersionCopy,
    decode_canary,
    encode_canary,
)
from embedding_assets.stores.dead_letters import FAILED, REJECTED, WARNING, DeadLetters
from embedding_assets.stores.feature_store import FeatureStore
from embedding_assets.stores.shard_state import ShardSpool, ShardStateStore

# single_run backfills make a whole-collection backfill one MongoDB scan; multi_run, parallel runs.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

VERSION_TAG = "embedding_assets/version"
# When the run's document_snapshots step read MongoDB (feature store seconds): what the run saw
# absent, it saw absent then, and its deletions are ordered by it (lib/merge.py, redis_entries).
READ_TAG = "embedding_assets/read_at"

# No pools: runs at once are bounded by the run queue (max_concurrent_runs, sized to the embedding
# service), and correctness rests on per-shard locks and merges (lib/merge.py, stores/locks.py).
# Pools on PostgreSQL also crash runs that initialize a pool at once or after its default limit
# changed (dagster-io/dagster#33552): a parallel backfill's first runs did, here.
_COMMON = dict(
    partitions_def=shard_partitions,
    backfill_policy=backfill_policy(),
    group_name="embeddings",
    # whole-step retries for what the in-step retries could not ride out
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
)


class ChangedDocuments(dg.Config):
    """doc_ids a sensor saw added, modified or deleted; empty means the whole shard."""

    doc_ids: list[str] = []


@dg.asset(kinds={"mongodb", "polars"}, **_COMMON)
def document_snapshots(
    context: dg.AssetExecutionContext,
    config: ChangedDocuments,
    source: DocumentSourceResource,
    shard_state: ShardStateResource,
    feature_store: FeatureStoreResource,
) -> dg.MaterializeResult:
    """The shard's live documents as they are in MongoDB: ids, text fields, language, timestamps."""
    record_run_process(context)
    started = time.perf_counter()
    # on the feature store's clock: entries' computed_at is on it too (lib/staleness.py)
    read_started = dt.datetime.fromtimestamp(feature_store.store().entries.server_time(), dt.UTC)
    context.instance.add_run_tags(context.run.run_id, {READ_TAG: str(int(read_started.timestamp()))})
    shards = run_shards(context)
    state = shard_state.store()
    written = _Written(context, state, "document_snapshots")
    unusable = 0
    if not config.doc_ids:
        docs = source.source().iter_shards(shards, NUM_SHARDS)
        spool = ShardSpool(state, "document_snapshots")
        for s, frame in snapshot.snapshot_shards(docs, shards, spool, read_started):
            # one shard in memory at a time; what a later read stored meanwhile stays
            written.save_snapshot(shard_key(s, NUM_SHARDS), frame, scanned_at=read_started)
            unusable += frame["doc_id"].null_count()
        spool.clear()
        return written.result(
            documents_per_second=_rate(written.rows, started),
            failures=unusable,
            shards=len(shards),
            mode="full",
        )

    found = source.source().iter_by_ids(config.doc_ids)
    fetched = snapshot.snapshot_frames(
        ((shard_of(doc_key(d["doc_id"]), NUM_SHARDS), d) for d in found),
        range(NUM_SHARDS),
        read_started,
    )
    upserted = deleted = 0
    for s in shards:
        requested = [d for d in config.doc_ids if shard_of(d, NUM_SHARDS) == s]
        rows = fetched[s].filter(pl.col("doc_id").is_in(requested))
        gone = sorted(set(requested) - set(rows["doc_id"].to_list()))
        written.save_snapshot(shard_key(s, NUM_SHARDS), rows, tombstones(gone, read_started))
        written.shard(shard_key(s, NUM_SHARDS), upserted=rows.height, deleted=len(gone))
        upserted += rows.height
        deleted += len(gone)
    return written.result(
        requested=len(config.doc_ids),
        upserted=upserted,
        deleted=deleted,
        documents_per_second=_rate(len(config.doc_ids), started),
        failures=unusable,
        mode="delta",
    )


@dg.asset(deps=[document_snapshots], kinds={"polars"}, **_COMMON)
def chunked_text(
    context: dg.AssetExecutionContext,
    embedding_model: EmbeddingModelResource,
    shard_state: ShardStateResource,
    feature_store: FeatureStoreResource,
) -> dg.MaterializeResult:
    """Token-window chunks per document, cut with the model's own tokenizer; skips say why.

    Documents that cannot be embedded are dead-lettered as rejected, repaired ones as warnings.
    """
    record_run_process(context)
    plan = embedding_model.chunk_plan()
    _stamp_version(context, plan.spec)
    # the tokenizer alone, no weights (and none at all for whole-document embedders)
    tokenizer = None if plan.single_chunk else embedding_model.embedder().tokenizer
    state = shard_state.store()
    started = time.perf_counter()
    written = _Written(context, state, "chunked_text")
    totals = {"reused": 0, "chunks": 0, "tokens": 0}
    skipped: list[pl.DataFrame] = []
    letters = feature_store.store().control.dead_letters(plan.spec.tag)
    for key in work_keys(context):
        frame, reused_ids = chunk_frame(
            _upstream(state, "document_snapshots", key),
            tokenizer,
            plan,
            previous=state.load("chunked_text", key),
        )
        written.save_derived(key, frame)
        totals["reused"] += len(reused_ids)
        totals["chunks"] += int(frame["chunks"].list.len().sum() or 0)
        totals["tokens"] += int(frame["n_tokens"].sum() or 0)
        skipped.append(frame.filter(pl.col("skip_reason").is_not_null()).select("doc_id", "skip_reason"))
        written.shard(key, reused=len(reused_ids), skipped=skipped[-1].height)
        _record_input_problems(letters, frame.filter(~pl.col("doc_id").is_in(reused_ids).fill_null(False)))
    skipped_rows = (
        pl.concat(skipped)
        if skipped
        else pl.DataFrame(schema={"doc_id": pl.String, "skip_reason": pl.String})
    )
    return written.result(
        chunked=written.rows - totals["reused"] - skipped_rows.height,
        skipped=skipped_rows.height,
        failures=skipped_rows.height,
        skip_reasons=dg.MetadataValue.md(_reason_table(skipped_rows)),
        documents_per_second=_rate(written.rows, started),
        version=plan.spec.tag,
        **totals,
    )


@dg.asset(deps=[chunked_text], kinds={"pytorch", "polars"}, **_COMMON)
def document_vectors(
    context: dg.AssetExecutionContext,
    embedding_model: EmbeddingModelResource,
    shard_state: ShardStateResource,
    feature_store: FeatureStoreResource,
) -> dg.MaterializeResult:
    """Chunk vectors from the embedder, pooled into one unit vector per document."""
    record_run_process(context)
    spec = _run_spec(context, embedding_model)
    embedder = embedding_model.embedder()
    state = shard_state.store()
    started = time.perf_counter()
    model_loaded = False

    def load_model() -> None:
        """The weights, once and only when a document needs them: deletions and metadata-only
        edits (most sensor runs) never import torch. The rate counts from after the load."""
        nonlocal started, model_loaded
        if not model_loaded:
            load_started = time.perf_counter()
            embedder.encode(["warm up"])
            started += time.perf_counter() - load_started
            model_loaded = True

    total = sum(
        _upstream(state, "chunked_text", k, ["skip_reason"])["skip_reason"].null_count()
        for k in work_keys(context)
    )
    done = {"n": 0}

    def progress_of(key: str) -> Callable[[int, int], None]:
        """Progress over what the shard has to embed (its changed documents, not its reused ones)."""

        def report(shard_done: int, shard_todo: int) -> None:
            rate = (done["n"] + shard_done) / max(time.perf_counter() - started, 1e-9)
            eta = (shard_todo - shard_done) / rate if rate else float("inf")
            context.log.info(
                f"{key}: embedded {shard_done}/{shard_todo} new or changed documents, {rate:.1f}/s, "
                f"ETA {eta:.0f}s"
            )

        return report

    written = _Written(context, state, "document_vectors")
    chunks = 0
    control = feature_store.store().control
    control.register_version(spec, layout=False)  # checks read it before publishing
    control.set_query_model(spec.tag, source_of(embedder))  # where clients load it for queries
    _verify_model(context, embedder, control, state, spec)
    letters = control.dead_letters(spec.tag)
    previously_failed = {d.doc_id for d in letters.all() if d.kind == FAILED}
    failed: list[tuple[str, str]] = []
    embedded = model_failures = 0
    for key in work_keys(context):
        result = vector_frame(
            _upstream(state, "chunked_text", key),
            embedder,
            retry_seconds=embedding_model.retry_seconds,
            previous=state.load_with_checkpoints("document_vectors", key),
            docs_per_batch=embedding_model.checkpoint_docs,
            progress=progress_of(key),
            checkpoint=lambda part, key=key: state.save_checkpoint("document_vectors", key, part),
            before_embedding=load_model,
            pooling=spec.pooling,
        )
        valid, bad = split_invalid(result.frame)
        written.save_derived(key, valid)
        state.clear_checkpoints("document_vectors", key)  # the shard is stored whole
        chunks += int(valid["n_chunks"].sum() or 0)
        shard_failures = result.failures + [
            (d, "invalid vector: non-finite, zero or constant") for d in bad["doc_id"].to_list()
        ]
        letters.record([(d, FAILED, reason) for d, reason in shard_failures])
        letters.clear(previously_failed.intersection(valid["doc_id"].to_list()))  # succeeded now
        failed += shard_failures
        written.shard(key, embedded=result.embedded, failures=len(shard_failures))
        embedded += result.embedded
        model_failures += len(result.failures)
        done["n"] += result.embedded + len(result.failures)
    if failed:
        context.log.warning(f"{len(failed)} documents failed: {failed[:10]}")
    attempted = embedded + model_failures  # documents handed to the model in this run
    return written.result(
        embedded=embedded,
        reused=total - attempted,
        attempted=attempted,
        failures=len(failed),
        chunks=chunks,
        documents_per_second=_rate(embedded, started),
        model=embedder.model_name,
        device=embedder.device,
        model_loaded=model_loaded,
        precision=embedder.precision,
        version=spec.tag,
    )


@dg.asset(deps=[document_vectors], kinds={"redis"}, **_COMMON)
def feature_store_entries(
    context: dg.AssetExecutionContext,
    config: ChangedDocuments,
    embedding_model: EmbeddingModelResource,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
    source: DocumentSourceResource,
) -> dg.MaterializeResult:
    """One compact binary record per document in Redis; gone documents leave it."""
    record_run_process(context)
    started = time.perf_counter()
    store = feature_store.store()
    encoding = feature_store.encoding()
    spec = _run_spec(context, embedding_model)
    state = shard_state.store()
    policy = _eviction_policy(context, store)
    copy = state.load_version_copy(spec.tag)
    try:  # the control keys this version's entries were written with, restored if lost
        restored = store.control.reconcile(spec, VersionCopy.from_json(copy) if copy else None)
    except ControlPlaneConflict as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    if restored:
        context.log.warning(f"restored lost control keys from the version's copy: {restored}")
    columns = ["doc_id", "modified_at", "content_hash", "vector"]  # not the chunk vectors

    def vectors() -> Iterator[pl.DataFrame]:  # one shard in memory at a time
        for key in work_keys(context):
            yield _upstream(state, "document_vectors", key, columns)

    calibration = store.calibration_for(spec, vectors())
    labeled_score = _record_quality(context, embedding_model, store, spec, calibration)
    latest = store.control.copy_of(spec)
    if copy is None or VersionCopy.from_json(copy) != latest:
        state.save_version_copy(spec.tag, latest.to_json())
    now = store.entries.server_time()
    stats = publish.PublishStats()
    # a delta run read only its own documents: the rest of its shards' rows, published again
    # where the store lost their entries, are looked up first (see publish.publish)
    changed = set(config.doc_ids or [])

    def still_live(ids: list[str]) -> set[str]:
        return changed | source.source().live_ids([d for d in ids if d not in changed])

    live: set[str] = set()
    rows = 0
    per_shard: dict[str, dict[str, object]] = {}
    for key, frame in zip(work_keys(context), vectors(), strict=True):
        reads = state.load("document_snapshots", key, ["doc_id", "modified_at", "read_at"])
        shard_stats = publish.publish(
            store.entries,
            spec,
            publish.with_read_times(frame, reads),
            calibration,
            now=now,
            max_age_seconds=feature_store.max_age_seconds,
            still_live=still_live if changed else None,
        )
        stats.add(shard_stats)
        per_shard[key] = {"rows": frame.height, "written": shard_stats.written, "gone": 0}
        live.update(frame["doc_id"].to_list())
        rows += frame.height
    shards = set(run_shards(context))
    # a delta run: the ids it was told about; a full run: every stored id (deletions nobody saw)
    forget = now - int(TOMBSTONE_RETENTION.total_seconds())
    candidates = config.doc_ids or store.entries.scan_ids(spec.tag, forget_deletions_before=forget)
    gone = publish.orphans_among(candidates, live, shards, NUM_SHARDS)
    stats.deleted = publish.remove_entries(store.entries, spec.tag, gone, _read_time(context))
    for doc_id in gone:
        figures = per_shard.get(shard_key(shard_of(doc_id, NUM_SHARDS), NUM_SHARDS))
        if figures is not None:
            figures["gone"] = int(figures["gone"]) + 1  # type: ignore[call-overload]
    store.control.dead_letters(spec.tag).clear(gone)
    active = store.control.activate_if_none(spec.tag)
    if active != spec.tag:  # docs/architecture.md, "Building a new version"
        context.log.warning(
            f"this deployment writes version {spec.tag}; readers use {active}, which only the "
            "deployment configured for it keeps current: keep it running until `activate`"
        )
    totals = {
        "rows": rows,
        **{f"entries_{state}": n for state, n in sorted(stats.states.items())},
        "written": stats.written,
        "superseded": stats.superseded,
        "deleted": stats.deleted,
        "bytes_written": stats.bytes_written,
        "bytes_per_entry": round(stats.bytes_written / stats.written, 1) if stats.written else 0,
        "documents_per_second": _rate(rows, started),
        "failures": stats.failures,
        "version": spec.tag,
        "active_version": active,
        "writes_active_version": active == spec.tag,
        "bucket_encoding": encoding,
        "maxmemory_policy": policy or "unknown",
        "control_keys_restored": len(restored),
        "not_restored": stats.not_restored,
        "mode": "delta" if config.doc_ids else "full",
        **({"labeled_set_score": labeled_score["score"]} if labeled_score else {}),
    }
    return dg.MaterializeResult(metadata=shard_figures(context, per_shard, totals))


def _record_quality(
    context: dg.AssetExecutionContext,
    model: EmbeddingModelResource,
    store: FeatureStore,
    spec: EmbeddingSpec,
    calibration: Int8Calibration | None,
) -> dict | None:
    """The version's score on the shipped labeled set, recorded once, by its first publish: the
    labeled passages and queries embedded by this run's model, scored as clients decode them."""
    recorded = store.control.quality(spec.tag)
    if recorded is not None or (spec.quantization == INT8 and calibration is None):
        return recorded
    labeled = quality.labeled_set()
    passages, queries = _labeled_vectors(model.embedder(), labeled)
    decoded = quality.score(quality.as_stored(passages, spec, calibration), queries, labeled)
    exact = quality.score(passages, queries, labeled)
    record = {
        **decoded.as_dict(),
        "float32_score": exact.score,
        "labeled_set": labeled.digest,
        "queries": len(queries) + len(labeled.subjects) * (len(labeled.languages) - 1),  # + English
        "recorded_at": int(time.time()),
    }
    store.control.set_quality(spec.tag, record, np.concatenate([passages, queries]))
    context.log.info(
        f"version {spec.tag} scores {record['score']} on the labeled set (float32 {exact.score})"
    )
    return record


# -- helpers ----------------------------------------------------------------------------------------
_LABELED_VECTORS: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}


def _labeled_vectors(embedder: Embedder, labeled: quality.LabeledSet) -> tuple[np.ndarray, np.ndarray]:
    """The labeled set's passage and query vectors, once per process and model: a process that
    publishes several versions or stores (the harness, a test session) embeds them once."""
    key = (
        type(embedder).__name__,
        embedder.model_name,
        embedder.fingerprint,
        str(getattr(embedder, "precision", "")),
        labeled.digest,
    )
    if key not in _LABELED_VECTORS:
        _LABELED_VECTORS[key] = (
            embedder.encode(labeled.passage_texts()),
            embedder.encode_queries(labeled.query_texts()),
        )
    return _LABELED_VECTORS[key]


class _Written:
    """Shards an asset stored in this step, and the metadata that says so: the run's totals, and
    each shard's own figures on its partition's materialization."""

    def __init__(self, context: dg.AssetExecutionContext, state: ShardStateStore, asset: str) -> None:
        self.context, self.state, self.asset = context, state, asset
        self.rows = self.bytes = 0
        self.shards: dict[str, dict[str, object]] = {}

    def save_snapshot(self, key: str, frame: pl.DataFrame, deleted: pl.DataFrame | None = None, **kw) -> None:
        size = self.state.save_snapshot(key, frame, deleted, now=_utcnow(), **kw)
        self._count(key, frame.height, size)

    def save_derived(self, key: str, frame: pl.DataFrame) -> None:
        self._count(key, frame.height, self.state.save_derived(self.asset, key, frame))

    def _count(self, key: str, rows: int, size: int) -> None:
        self.rows += rows
        self.bytes += size
        self.shard(key, rows=rows, bytes_written=size)

    def shard(self, key: str, **figures: object) -> None:
        """Figures of one shard (added to what it has)."""
        mine = self.shards.setdefault(key, {})
        for name, value in figures.items():
            mine[name] = mine[name] + value if isinstance(value, int) and name in mine else value

    def result(self, **metadata: object) -> dg.MaterializeResult:
        totals = {
            "rows": self.rows,
            "bytes_written": self.bytes,
            "path": dg.MetadataValue.path(str(self.state.base / self.asset)),
            **metadata,
        }
        return dg.MaterializeResult(metadata=shard_figures(self.context, self.shards, totals))


def shard_figures(
    context: dg.AssetExecutionContext, shards: dict[str, dict[str, object]], totals: dict[str, object]
) -> dict[str, object]:
    """Each partition of the run gets its own shard's figures under the usual names (``rows``,
    ``written``, ...). What is returned, which Dagster records on every partition of the run, holds
    only what is the run's: its figures as ``run_<name>`` (totals, rates, tables) and what is the
    same for every shard (``version``, ``mode``, ``model``)."""
    run: dict[str, object] = {}
    for name, value in totals.items():
        figure = isinstance(value, int | float | dg.MetadataValue) and not isinstance(value, bool)
        shared = isinstance(value, dg.PathMetadataValue)
        run[f"run_{name}" if figure and not shared else name] = value
    names = {name for figures in shards.values() for name in figures} | {"rows"}
    for key in context.partition_keys:
        context.add_asset_metadata({**{n: 0 for n in names}, **shards.get(key, {})}, partition_key=key)
    return run


def _upstream(state: ShardStateStore, asset: str, key: str, columns: list[str] | None = None) -> pl.DataFrame:
    frame = state.load(asset, key, columns)
    if frame is None:
        raise dg.Failure(f"{asset} has no stored shard {key} in {state.base}; materialize it first")
    return frame


def _verify_model(
    context: dg.AssetExecutionContext,
    embedder: object,
    control: ControlPlane,
    state: ShardStateStore,
    spec: EmbeddingSpec,
) -> None:
    """A remote model's endpoints embed the canary texts as the version's first run did (its
    vectors kept in Redis and beside the shard state), or nothing of this run is written."""
    verify = getattr(embedder, "verify", None)
    if verify is None:  # a local model: its files' fingerprint is in the version tag
        return
    kept = state.load_canary(spec.tag)
    reference = control.canary(spec.tag)
    if reference is None and kept is not None:
        reference = decode_canary(kept)
    try:
        vectors = verify(reference)
        stored = control.ensure_canary(spec.tag, vectors)
        if reference is None:  # another first run may have stored its own meanwhile
            verify(stored)
    except ModelMismatch as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    if kept is None:
        state.save_canary(spec.tag, encode_canary(stored))
    context.log.info(f"model identity verified on {len(vectors)} canary texts")


def _read_time(context: dg.AssetExecutionContext) -> int:
    """When this run read MongoDB (READ_TAG), 0 where it did not (no snapshot step in it)."""
    run = context.instance.get_run_by_id(context.run.run_id)
    return int(run.tags.get(READ_TAG, 0)) if run else 0


def _stamp_version(context: dg.AssetExecutionContext, spec: EmbeddingSpec) -> None:
    """The run's version tag, computed once (by chunked_text) and kept on the run."""
    context.instance.add_run_tags(context.run.run_id, {VERSION_TAG: spec.tag})


def _run_spec(context: dg.AssetExecutionContext, model: EmbeddingModelResource) -> EmbeddingSpec:
    """This step's spec, refused if it is not the version the run's chunks were made for
    (a model folder or setting changed between steps)."""
    spec = model.spec()
    run = context.instance.get_run_by_id(context.run.run_id)
    stamped = run.tags.get(VERSION_TAG) if run else None
    if stamped is None:
        _stamp_version(context, spec)
    elif stamped != spec.tag:
        raise dg.Failure(
            f"this step computes version {spec.tag}, but the run's chunks are of {stamped}: the model "
            "or an embedding setting changed during the run; run it again"
        )
    return spec


# Policies that may evict keys without a TTL: the control keys. volatile-* evict only keys with a
# TTL (entry buckets: the audit finds and the sweep refills them); noeviction refuses writes.
UNSAFE_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


def _eviction_policy(context: dg.AssetExecutionContext, store: FeatureStore) -> str | None:
    policy = store.control.eviction_policy()
    if policy in UNSAFE_POLICIES:
        raise dg.Failure(
            f"the feature store's maxmemory-policy is {policy}: under memory pressure it evicts the "
            "control keys (bucket layout, calibration) and entries alike. Set noeviction (writes fail "
            "loudly when full) or a volatile-* policy (only entry buckets, which carry a TTL, can go); "
            "see deploy/README.md",
            allow_retries=False,
        )
    if policy and policy.startswith("volatile-"):
        context.log.warning(f"maxmemory-policy {policy}: entries may be evicted under memory pressure")
    return policy


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rate(count: int, started: float) -> float:
    return round(count / max(time.perf_counter() - started, 1e-9), 1)


def _record_input_problems(letters: DeadLetters, rows: pl.DataFrame) -> None:
    """Dead letters for rows (re)computed now: rejected, warned, or cleared when clean."""
    problems, clean = [], []
    for row in rows.iter_rows(named=True):
        key = dead_letter_id(row)
        if row["skip_reason"]:
            problems.append((key, REJECTED, row["skip_reason"]))
        elif row["note"]:
            problems.append((key, WARNING, row["note"]))
        else:
            clean.append(key)
    letters.record(problems)
    letters.clear(clean, kinds=[REJECTED, WARNING])


def _reason_table(skipped: pl.DataFrame, limit: int = 20) -> str:
    if skipped.height == 0:
        return "none"
    lines = ["| doc_id | reason |", "| --- | --- |"]
    for row in skipped.head(limit).iter_rows(named=True):
        lines.append(f"| {row['doc_id']} | {row['skip_reason']} |")
    if skipped.height > limit:
        lines.append(f"| ... | {skipped.height - limit} more |")
    return "\n".join(lines)


embedding_assets = [document_snapshots, chunked_text, document_vectors, feature_store_entries]
