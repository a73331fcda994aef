"""Check evaluations shown for the latest materialization, whatever order overlapping runs end in.

The Checks tab shows a check's newest execution record (Dagster creates one for each run that
plans the check, when the run is created) if that record evaluated the asset's latest
materialization, and "Not Evaluated" otherwise. Runs overlap and end in any order: when the run
created later ends first (a deletion run beside a change run, say) and the earlier one then
materializes, the newest record evaluated an older materialization, and each check showed "Not
Evaluated" until the next run.

So a check step records its evaluation once more, runless, against the asset's latest
materialization when nothing else will: when the newest record is another run's that is already
resolved (evaluated, or its run ended), or when the newest is its own but targets another
shard's older materialization (a single-shard run's check targets its shard) and the run that
made the latest one has already evaluated. A newest record still in progress is left alone: its
run evaluates later and is then the one to decide. The runless record's metadata
``evaluated_in_run`` links the run that evaluated it.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluation,
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

EVALUATED_IN = "evaluated_in_run"


def _resolved(instance: dg.DagsterInstance, record: AssetCheckExecutionRecord | None) -> bool:
    """Whether nothing more will be evaluated for this record: it has its evaluation, or its run
    ended without one."""
    if record is None or record.status != AssetCheckExecutionRecordStatus.PLANNED:
        return True
    run = instance.get_run_by_id(record.run_id) if record.run_id else None
    return run is None or run.is_finished


def _latest_materialization(
    instance: dg.DagsterInstance, asset: dg.AssetKey
) -> AssetCheckEvaluationTargetMaterializationData | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset), limit=1).records
    if not records:
        return None
    latest = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=latest.event_log_entry.run_id, storage_id=latest.storage_id, timestamp=latest.timestamp
    )


def _record_of(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, run_id: str
) -> AssetCheckExecutionRecord | None:
    for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=20):
        if record.run_id == run_id:
            return record
    return None


def needs_carrying(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, run_id: str, single_partition: bool
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The latest materialization, where this run's evaluation must be recorded against it again
    for the Checks tab to show one (module docstring); None where nothing is needed."""
    newest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    latest = _latest_materialization(instance, key.asset_key)
    if newest is None or latest is None:
        return None
    if newest.run_id != run_id:
        return latest if _resolved(instance, newest) else None
    if not single_partition or latest.run_id == run_id:
        return None  # this run's evaluation targets the latest materialization itself
    return latest if _resolved(instance, _record_of(instance, key, latest.run_id)) else None


def shown_for_latest(
    context: dg.AssetCheckExecutionContext, result: dg.AssetCheckResult
) -> dg.AssetCheckResult:
    """``result``, recorded runless as well where the Checks tab would otherwise show no
    evaluation for the latest materialization (module docstring)."""
    key = (
        dg.AssetCheckKey(result.asset_key, result.check_name)
        if result.asset_key and result.check_name
        else next(iter(context.selected_asset_check_keys))
    )
    op_context = context.op_execution_context
    instance = context.instance
    target = needs_carrying(instance, key, op_context.run_id, op_context.has_partition_key)
    if target is None:
        return result
    instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=result.passed,
            metadata={**result.metadata, EVALUATED_IN: dg.MetadataValue.dagster_run(op_context.run_id)},
            target_materialization_data=target,
            severity=result.severity,
            description=result.description,
        )
    )
    return result
