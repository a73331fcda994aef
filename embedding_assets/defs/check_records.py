"""Check evaluations shown for the latest materialization, whatever order overlapping runs end in.

The Checks tab shows a check's newest execution record (Dagster creates one for each run that
plans the check, when the run is created) if that record evaluated the asset's latest
materialization, and "Not Evaluated" otherwise. Runs overlap and end in any order: when the run
created later ends first (a deletion run beside a change run, say) and the earlier one then
materializes, the newest record evaluated an older materialization, and each check showed "Not
Evaluated" until the next run. So a check step whose run's record is no longer the newest records
its evaluation once more, runless, against the asset's latest materialization: that record is the
newest, and its metadata names the run that evaluated it. Whichever run evaluates last does so,
so after any set of runs every check shows an evaluation.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluation,
    AssetCheckEvaluationTargetMaterializationData,
)

EVALUATED_IN = "evaluated_in_run"


def newest_record_is_another_runs(instance: dg.DagsterInstance, key: dg.AssetCheckKey, run_id: str) -> bool:
    newest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    return newest is not None and newest.run_id != run_id


def latest_materialization(
    instance: dg.DagsterInstance, asset: dg.AssetKey
) -> AssetCheckEvaluationTargetMaterializationData | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset), limit=1).records
    if not records:
        return None
    latest = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=latest.event_log_entry.run_id, storage_id=latest.storage_id, timestamp=latest.timestamp
    )


def shown_for_latest(
    context: dg.AssetCheckExecutionContext, result: dg.AssetCheckResult
) -> dg.AssetCheckResult:
    """``result``, recorded runless as well where a run created after this one holds the newest
    record of its check (module docstring)."""
    key = (
        dg.AssetCheckKey(result.asset_key, result.check_name)
        if result.asset_key and result.check_name
        else next(iter(context.selected_asset_check_keys))
    )
    instance = context.instance
    run_id = context.op_execution_context.run_id
    if not newest_record_is_another_runs(instance, key, run_id):
        return result
    instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=result.passed,
            metadata={**result.metadata, EVALUATED_IN: dg.MetadataValue.dagster_run(run_id)},
            target_materialization_data=latest_materialization(instance, key.asset_key),
            severity=result.severity,
            description=result.description,
        )
    )
    return result
