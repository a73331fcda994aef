"""Jobs and the daily sweep."""

import dagster as dg

from embedding_assets.defs.assets import embedding_assets
from embedding_assets.defs.partitions import range_tags

embed_documents = dg.define_asset_job(
    "embed_documents",
    selection=dg.AssetSelection.assets(*embedding_assets),
    description="Snapshot, chunk, embed and publish the selected shards (all of them, or a delta).",
)


@dg.schedule(
    job=embed_documents,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_sweep(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every shard, fully, in one run: missing, stale and old entries are fixed, orphans removed.

    Unchanged documents are not re-embedded; old entries are restamped with a renewed TTL.
    """
    return dg.RunRequest(
        run_key=f"sweep:{context.scheduled_execution_time:%Y-%m-%d}",
        tags={**range_tags(), "embedding_assets/trigger": "sweep"},
    )
