"""Housekeeping keeps the instance and the shard state bounded: old runs go with their event
logs (failures later), leftovers of dead runs and tombstones past retention go, the rest stays."""

import datetime as dt
import os

import dagster as dg
import polars as pl

from embedding_assets import housekeeping
from embedding_assets.definitions import defs
from embedding_assets.defs.housekeeping import housekeeping_job, housekeeping_schedule
from embedding_assets.lib.merge import tombstones
from embedding_assets.stores.shard_state import ShardStateStore


@dg.op
def works() -> None:
    pass


@dg.op
def breaks() -> None:
    raise RuntimeError("on purpose")


@dg.job
def good() -> None:
    works()


@dg.job
def bad() -> None:
    breaks()


def test_old_runs_go_with_their_event_logs_and_failures_stay_longer():
    with dg.instance_for_test() as instance:
        ok = good.execute_in_process(instance=instance).run_id
        failed = bad.execute_in_process(instance=instance, raise_on_error=False).run_id
        now = dt.datetime.now(dt.UTC)
        keep, keep_failed = dt.timedelta(days=14), dt.timedelta(days=60)

        pruned = housekeeping.Pruned()
        housekeeping.prune_runs(instance, now, keep, keep_failed, pruned)
        assert (pruned.runs, pruned.failed_runs) == (0, 0)  # nothing old yet

        housekeeping.prune_runs(instance, now + dt.timedelta(days=15), keep, keep_failed, pruned)
        assert (pruned.runs, pruned.failed_runs) == (1, 0)
        assert instance.get_run_by_id(ok) is None and instance.all_logs(ok) == []
        assert instance.get_run_by_id(failed) is not None and instance.all_logs(failed)

        housekeeping.prune_runs(instance, now + dt.timedelta(days=61), keep, keep_failed, pruned)
        assert (pruned.runs, pruned.failed_runs) == (1, 1)
        assert instance.get_run_by_id(failed) is None and instance.all_logs(failed) == []


def _aged(path, days: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).timestamp()
    os.utime(path, (when, when))


def test_leftovers_of_dead_runs_and_old_tombstones_go_and_live_state_stays(tmp_path):
    state = ShardStateStore(tmp_path / "parquet", 16)
    now = dt.datetime.now(dt.UTC)
    base = state.base
    _aged(base / "document_snapshots" / "_spool" / "shard-03" / "part-1.parquet", 3)
    _aged(base / "document_vectors" / "_checkpoints" / "shard-04" / "old.parquet", 3)
    fresh = base / "document_vectors" / "_checkpoints" / "shard-05" / "running.parquet"
    _aged(fresh, 0.1)  # a run that is embedding now resumes from it
    _aged(base / "_audit" / "repairs-1.parquet", 2)
    _aged(base / "_audit" / "latest.json", 2)  # the last summary stays, however old
    deleted = pl.concat(
        [tombstones(["old-1", "old-2"], now - dt.timedelta(days=8)), tombstones(["new"], now)]
    )
    state.save_snapshot("shard-06", pl.DataFrame({"doc_id": ["kept"]}), None, now=now - dt.timedelta(days=30))
    state._deleted_path("document_snapshots", "shard-06").parent.mkdir(parents=True, exist_ok=True)
    deleted.write_parquet(str(state._deleted_path("document_snapshots", "shard-06")))

    pruned = housekeeping.Pruned()
    housekeeping.prune_state(state, now, pruned)

    counts = (pruned.spool_files, pruned.checkpoint_files, pruned.tombstones, pruned.audit_files)
    assert counts == (1, 1, 2, 1)
    assert fresh.exists() and (base / "_audit" / "latest.json").exists()
    assert state.load_deleted("document_snapshots", "shard-06")["doc_id"].to_list() == ["new"]
    assert state.load("document_snapshots", "shard-06")["doc_id"].to_list() == ["kept"]


def test_the_housekeeping_job_runs_daily_on_the_code_location(tmp_path, monkeypatch):
    monkeypatch.setenv("EA_PARQUET_DIR", str(tmp_path / "parquet"))
    assert defs.resolve_job_def("housekeeping_job") is not None
    assert defs.resolve_schedule_def("housekeeping_schedule").cron_schedule == "15 5 * * *"
    when = dt.datetime(2026, 6, 2, 5, 15, tzinfo=dt.UTC)
    context = dg.build_schedule_context(scheduled_execution_time=when)
    assert housekeeping_schedule(context).run_key == "housekeeping:2026-06-02T05:15"  # one per firing
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(housekeeping_job.name).execute_in_process(instance=instance)
        assert result.success
        [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
        figures = output.event_specific_data.metadata
        assert {"runs", "failed_runs", "spool_files", "tombstones"} <= set(figures)
