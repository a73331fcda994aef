"""The code location: ``dagster dev -m embedding_assets.definitions``.

Cross-cutting policy is applied here, once: every asset gets the 24h freshness policy, every run
the in-process executor.
"""

from __future__ import annotations

import datetime as dt
import warnings

import dagster as dg

from embedding_assets import process_memory, settings
from embedding_assets.defs.alerts import alert_sensors
from embedding_assets.defs.assets import embedding_assets
from embedding_assets.defs.audit import audit_checks, audit_jobs, audit_schedules, audit_sensors
from embedding_assets.defs.checks import embedding_checks
from embedding_assets.defs.housekeeping import housekeeping_job, housekeeping_schedule
from embedding_assets.defs.jobs import daily_sweep, embed_documents
from embedding_assets.defs.orphaned_runs import orphaned_runs_sensor
from embedding_assets.defs.resources import build_resources
from embedding_assets.defs.sensors import document_changes_sensor, document_deletions_sensor

# a run's process executes this first: a C heap for each of its threads, set before they start
process_memory.allow_an_arena_per_thread()

warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*map_(resolved_)?asset_specs.*")

_STALE = dt.timedelta(seconds=int(settings.get("EA_STALE_SECONDS")))
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=_STALE, warn_window=_STALE / 2)


def apply_freshness_policy(spec: dg.AssetSpec) -> dg.AssetSpec:
    return spec.replace_attributes(freshness_policy=FRESHNESS)


defs = dg.Definitions(
    assets=embedding_assets,
    asset_checks=[*embedding_checks, *audit_checks],
    jobs=[embed_documents, *audit_jobs, housekeeping_job],
    schedules=[daily_sweep, *audit_schedules, housekeeping_schedule],
    sensors=[
        document_changes_sensor,
        document_deletions_sensor,
        *audit_sensors,
        *alert_sensors,
        orphaned_runs_sensor,
    ],
    resources=build_resources(),
    # A run's steps form a chain, so step processes would add only their start-up and a model
    # load each; parallelism comes from runs (EA_SHARDS_PER_RUN), one process or pod per run.
    executor=dg.in_process_executor,
    # a run's console output (the code server's log) from INFO: every event, DEBUG included, is
    # in the run's event log, which the UI shows
    loggers={"console": dg.colored_console_logger.configured({"log_level": "INFO"})},
).map_asset_specs(func=apply_freshness_policy)
