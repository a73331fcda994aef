"""Jobs and the daily sweep.

The store audit's job is named here by its check keys (its checks are defs/audit.py), so that
sensors can ask for an audit without importing the checks that import them.
"""

import dagster as dg

from embedding_assets import settings
from embedding_assets.defs.assets import embedding_assets, feature_store_entries
from embedding_assets.defs.partitions import range_tags

# Which schedule or sensor launched a run (sweep, changes, deletions, repair, audit-*): what
# backpressure, run queue limits and the runbook's Runs filter go by.
TRIGGER_TAG = "embedding_assets/trigger"

embed_documents = dg.define_asset_job(
    "embed_documents",
    selection=dg.AssetSelection.assets(*embedding_assets),
    description="Snapshot, chunk, embed and publish the selected shards (all of them, or a delta).",
)


@dg.schedule(
    job=embed_documents,
    cron_schedule=str(settings.get("EA_SWEEP_CRON")),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_sweep(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every shard, fully, in one run: missing, stale and old entries are fixed, orphans removed.

    Unchanged documents are not re-embedded; old entries are restamped with a renewed TTL.
    """
    return dg.RunRequest(
        run_key=f"sweep:{context.scheduled_execution_time:%Y-%m-%dT%H:%M}",
        tags={**range_tags(), TRIGGER_TAG: "sweep"},
    )


AUDIT_JOB = "store_audit_job"
AUDIT_CHECK_NAMES = (
    "coverage",
    "staleness",
    "orphans",
    "failed_documents",
    "entry_validity",
    "control_plane",
)

store_audit_job = dg.define_asset_job(
    AUDIT_JOB,
    selection=dg.AssetSelection.checks(
        *(dg.AssetCheckKey(feature_store_entries.key, name) for name in AUDIT_CHECK_NAMES)
    ),
    description="The store audit alone (no materialization): sampled by default, `mode: full` in config.",
)


def audit_request(mode: str, key: str) -> dg.RunRequest:
    """A run of the store audit alone, ``sampled`` or ``full``."""
    return dg.RunRequest(
        run_key=key,
        run_config={"ops": {"store_audit": {"config": {"mode": mode}}}},
        tags={TRIGGER_TAG: f"audit-{mode}"},
        job_name=AUDIT_JOB,
    )
