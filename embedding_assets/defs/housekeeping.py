"""The daily housekeeping run: the instance's runs and the shard state stay bounded
(housekeeping.py says what goes, docs/operations.md how much stays)."""

import datetime as dt

import dagster as dg

from embedding_assets import housekeeping, settings
from embedding_assets.defs.orphaned_runs import record_run_process
from embedding_assets.defs.resources import ShardStateResource


class HousekeepingConfig(dg.Config):
    """Days finished runs are kept (failed ones longer)."""

    keep_days: float = float(settings.get("EA_RUN_RETENTION_DAYS"))
    keep_failed_days: float = float(settings.get("EA_FAILED_RUN_RETENTION_DAYS"))


@dg.op
def prune(
    context: dg.OpExecutionContext, config: HousekeepingConfig, shard_state: ShardStateResource
) -> dg.Output[None]:
    record_run_process(context)
    started = dt.datetime.now(dt.UTC)
    pruned = housekeeping.Pruned()
    housekeeping.prune_runs(
        context.instance,
        started,
        dt.timedelta(days=config.keep_days),
        dt.timedelta(days=max(config.keep_failed_days, config.keep_days)),
        pruned,
    )
    housekeeping.prune_state(shard_state.store(), started, pruned)
    pruned.seconds = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 3)
    context.log.info(f"housekeeping: {pruned.as_metadata()}")
    return dg.Output(None, metadata=pruned.as_metadata())


@dg.job(description="Deletes runs older than EA_RUN_RETENTION_DAYS and the shard state's leftovers.")
def housekeeping_job() -> None:
    prune()


@dg.schedule(
    job=housekeeping_job,
    cron_schedule=str(settings.get("EA_HOUSEKEEPING_CRON")),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def housekeeping_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Daily, after the sweep and the full audit."""
    return dg.RunRequest(run_key=f"housekeeping:{context.scheduled_execution_time:%Y-%m-%dT%H:%M}")
