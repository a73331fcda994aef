"""The store audit as Dagster sees it: checks about the store, a job and schedules that run them
alone, and a sensor that sends what they find through the delta path at once.

The checks on feature_store_entries (coverage, staleness, orphans, failed_documents, entry_validity,
control_plane) are one audit of the active version against MongoDB (audit/store.py). They run
after every full run (sampled), every 10 minutes (sampled), daily (full) and from the UI's Execute
(one check or all); whatever ran them, their status describes the store, not a run. A delta run
audits its own documents and carries the last store-wide result beside them.
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import dagster as dg
import redis

from embedding_assets import settings
from embedding_assets.audit import early_sample
from embedding_assets.audit.findings import (
    DOCUMENTS,
    MODES,
    Findings,
    latest,
    load_gone_since,
    repairs_of,
    save_gone_since,
)
from embedding_assets.audit.store import audit_store
from embedding_assets.defs.assets import feature_store_entries
from embedding_assets.defs.audit_config import AUDIT_OP, AuditConfig
from embedding_assets.defs.check_records import shown_for_latest
from embedding_assets.defs.checks import check_metadata
from embedding_assets.defs.jobs import AUDIT_CHECK_NAMES, audit_request, embed_documents, store_audit_job
from embedding_assets.defs.orphaned_runs import record_run_process
from embedding_assets.defs.resources import (
    DocumentSourceResource,
    EmbeddingModelResource,
    FeatureStoreResource,
    ShardStateResource,
)
from embedding_assets.defs.run_tags import run_materializes
from embedding_assets.defs.sensors import delta_run_requests, runs_waiting
from embedding_assets.lib.audit import Outcome
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.process_memory import release_freed_memory
from embedding_assets.stores.control_plane import VersionCopy

MAX_ERROR_RATE = float(settings.get("EA_MAX_ERROR_RATE"))
# Documents sent for repair per audit: a flushed store of millions is repaired by the full
# audit's list in runs of this many, the rest by the next audits.
MAX_REPAIRS = 200_000

_CHECKS = {
    "coverage": (
        "Every live document with text has an entry of the active version with its current text.",
        True,
    ),
    "staleness": ("Under 1% of entries older than their document or than 24 h.", True),
    "orphans": ("No entry of a document that no longer exists.", False),
    "failed_documents": ("Under 0.1% of documents with text failed after retries, store-wide.", True),
    "entry_validity": ("Sampled entries decode, as readers decode them, into valid vectors.", True),
    "control_plane": (
        "Active pointer, version, bucket layout and calibration present, equal to the copy.",
        True,
    ),
}


assert tuple(_CHECKS) == AUDIT_CHECK_NAMES, "the audit job selects these checks by name"


@dg.multi_asset_check(
    name=AUDIT_OP,
    specs=[
        dg.AssetCheckSpec(name, asset=feature_store_entries, description=description, blocking=False)
        for name, (description, _) in _CHECKS.items()
    ],
    description="The active version's entries against MongoDB, store-wide (audit/store.py).",
    can_subset=True,  # each check has its own Execute in the UI; the audit runs whole either way
)
def store_audit(
    context: dg.AssetCheckExecutionContext,
    config: AuditConfig,
    source: DocumentSourceResource,
    feature_store: FeatureStoreResource,
    shard_state: ShardStateResource,
    embedding_model: EmbeddingModelResource,
) -> Iterator[dg.AssetCheckResult]:
    """Store-wide in audit runs, full runs and from the UI. In a delta run, the run's own documents
    are audited and the last store-wide audit is carried beside them, so that a sensor run never
    leaves the checks "not evaluated" nor reports less than the store-wide truth."""
    record_run_process(context)
    if config.mode not in MODES:
        raise dg.Failure(f"audit mode must be one of {MODES}, got {config.mode!r}", allow_retries=False)
    delta = delta_doc_ids(context.op_execution_context.run.run_config)
    selected = {key.name for key in context.selected_asset_check_keys}
    copies = shard_state.store().version_copies()
    gone = load_gone_since(settings.audit_dir()) if delta is None else None
    early = None
    if delta is None and config.mode == "sampled":  # read while this run published, where it did
        early = early_sample.take(context.run.run_id, config.sample_size)
    full_run = delta is None and run_materializes(context.op_execution_context, feature_store_entries.key)
    if full_run and early is None:
        # what the run's steps freed goes back to the system before the scan fills memory again
        # (the publish does so where it starts the scan): the audit is a full run's last step and
        # was its peak (a 100k static run's peak RSS 962-981 MB with this, 985-989 without, for
        # 0.15 s; docs/benchmarks.md)
        release_freed_memory()
    try:
        findings = audit_store(
            source.source(),
            feature_store.store(),
            mode=config.mode if delta is None else DOCUMENTS,
            sample_size=config.sample_size,
            configured=_configured(embedding_model, context),
            copy_of={t: VersionCopy.from_json(raw) for t, raw in copies.items()},
            doc_ids=delta,
            gone_since=gone,
            early=early,
        )
    except Exception as err:
        if delta is None:  # an audit run: its failure is the alert
            raise
        # a delta run has written its entries: a server gone meanwhile fails the checks, not the run
        context.log.warning(f"the audit of this run's documents could not run: {err}")
        for name in _CHECKS:
            if name in selected:
                yield shown_for_latest(
                    context,
                    dg.AssetCheckResult(
                        check_name=name,
                        asset_key=feature_store_entries.key,
                        passed=False,
                        description=f"this run's documents could not be audited: {str(err)[:300]}",
                        severity=dg.AssetCheckSeverity.WARN,
                    ),
                )
        return
    if delta is None:
        findings.save(settings.audit_dir(), MAX_ERROR_RATE)
        save_gone_since(settings.audit_dir(), gone or {})
        outcomes = findings.outcomes(MAX_ERROR_RATE)
    else:
        outcomes = carried(findings, latest(settings.audit_dir()))
    context.log.info(
        f"store audit ({findings.mode}) in {findings.seconds:.1f}s: {len(findings.repairs())} to repair"
    )
    for result in results(findings, outcomes, selected):
        yield shown_for_latest(context, result)


def delta_doc_ids(run_config: Mapping) -> list[str] | None:
    """The doc_ids a delta run was asked for (sensors.delta_run_requests), or None."""
    ops = run_config.get("ops", {})
    config = (ops.get("document_snapshots") or {}).get("config") or {}
    ids = config.get("doc_ids")
    return list(ids) if ids else None


def carried(own: Findings, store_wide: dict | None) -> dict[str, Outcome]:
    """A delta run's checks: its own documents' outcome and the last store-wide one, both."""
    out = {}
    for name, mine in own.outcomes(MAX_ERROR_RATE).items():
        last = (store_wide or {}).get("checks", {}).get(name)
        if last is None:
            wide = "no store-wide audit yet"
        else:
            age = max(0, own.at - int(store_wide["at"]))
            wide = f"store-wide ({store_wide['mode']} audit {age // 60} min ago): {last['description']}"
        out[name] = Outcome(
            mine.passed and (last is None or last["passed"]),
            f"this run's documents: {mine.description}. {wide}",
            {
                **mine.metadata,
                "mode": DOCUMENTS,
                "store_wide_passed": last["passed"] if last else True,
                "store_wide_audited_at": int(store_wide["at"]) if store_wide else 0,
            },
        )
    return out


def results(
    findings: Findings, outcomes: dict[str, Outcome] | None = None, selected: set[str] | None = None
) -> Iterator[dg.AssetCheckResult]:
    for name, outcome in (outcomes or findings.outcomes(MAX_ERROR_RATE)).items():
        if selected is not None and name not in selected:
            continue
        yield dg.AssetCheckResult(
            check_name=name,
            asset_key=feature_store_entries.key,
            passed=outcome.passed,
            description=outcome.description,
            metadata=check_metadata({**outcome.metadata, "audit_seconds": findings.seconds}),
            severity=dg.AssetCheckSeverity.ERROR if _CHECKS[name][1] else dg.AssetCheckSeverity.WARN,
        )


def _configured(
    model: EmbeddingModelResource, context: dg.AssetCheckExecutionContext
) -> EmbeddingSpec | None:
    """The version this deployment writes: audited when the store has lost its active pointer."""
    try:
        return model.spec()
    except Exception as err:
        context.log.warning(f"the configured model's version is unknown: {err}")
        return None


@dg.schedule(
    job=store_audit_job,
    cron_schedule=str(settings.get("EA_AUDIT_CRON")),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def store_audit_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """A sampled audit every 10 minutes: the repair sensor's and the metrics' source."""
    return audit_request("sampled", f"audit:{context.scheduled_execution_time:%Y-%m-%dT%H:%M}")


@dg.schedule(
    job=store_audit_job,
    cron_schedule=str(settings.get("EA_FULL_AUDIT_CRON")),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def store_audit_full_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """A full audit daily, after the sweep: every document and every entry."""
    return audit_request("full", f"audit-full:{context.scheduled_execution_time:%Y-%m-%dT%H:%M}")


@dg.sensor(
    jobs=[embed_documents, store_audit_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def store_repair_sensor(
    context: dg.SensorEvaluationContext, feature_store: FeatureStoreResource
) -> dg.SensorResult | dg.SkipReason:
    """What the last audit found missing, stale or extra goes through the delta path now (stored
    vectors are reused, nothing unchanged is re-embedded); a sampled audit that found problems
    asks for a full one, which lists them all. A Redis that restarted or evicted keys since the
    last tick gets a full audit at once, not at the next scheduled one: readers miss entries
    meanwhile."""
    cursor = RepairCursor.parse(context.cursor)
    try:
        incarnation = feature_store.store(wait=False).incarnation()
    except redis.RedisError:  # down: the audit will say what is lost once it is back
        incarnation = cursor.incarnation
    requests: list[dg.RunRequest] = []
    if cursor.incarnation and incarnation != cursor.incarnation:
        context.log.warning(f"store servers changed ({cursor.incarnation} -> {incarnation}): full audit")
        requests.append(audit_request("full", f"audit-full:store-changed:{incarnation}"))
    summary = latest(settings.audit_dir())
    audited = str(summary.get("id", summary["at"])) if summary is not None else cursor.audited
    if summary is None or audited == cursor.audited:
        return _repair_result(requests, RepairCursor(audited, incarnation), "no new audit")
    waiting = runs_waiting(context.instance, "repair")
    if waiting:  # the list waits; a newer audit may replace it meanwhile
        return _repair_result(
            requests,
            RepairCursor(cursor.audited, incarnation),
            f"{waiting} runs wait or run; repairs follow when they have",
        )
    ids = repairs_of(settings.audit_dir(), summary)[:MAX_REPAIRS]
    requests += delta_run_requests("repair", audited, ids, job_name=embed_documents.name)
    wrong = summary["missing"] + summary["mismatched"] + summary["stale"] + summary["extra"]
    if summary["mode"] == "sampled" and (wrong or summary["control_problems"]):
        requests.append(audit_request("full", f"audit-full:after:{audited}"))
    if ids:
        context.log.info(f"audit at {audited}: {len(ids)} documents to repair")
    done = RepairCursor(audited, incarnation)
    return _repair_result(requests, done, f"audit at {audited}: nothing to repair")


@dataclass(frozen=True)
class RepairCursor:
    """The last audit acted on, and the store servers' incarnation at the last tick."""

    audited: str | None = None
    incarnation: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "RepairCursor":
        if not raw:
            return cls()
        if not raw.startswith("{"):  # releases before: the audit's time alone
            return cls(audited=raw)
        found = json.loads(raw)
        return cls(found.get("audited"), found.get("incarnation"))

    def dump(self) -> str:
        return json.dumps({"audited": self.audited, "incarnation": self.incarnation})


def _repair_result(requests: list[dg.RunRequest], cursor: RepairCursor, skip: str) -> dg.SensorResult:
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump())
    return dg.SensorResult(skip_reason=skip, cursor=cursor.dump())


audit_checks = [store_audit]
audit_jobs = [store_audit_job]
audit_schedules = [store_audit_schedule, store_audit_full_schedule]
audit_sensors = [store_repair_sensor]
