"""Runs whose process is gone, failed at once so that run retries launch them again.

With Dagster's default run launcher a run is a child process of the code server. When the code
server dies with its children (its container restarted, its process group killed, the OOM
killer), their runs stay STARTED: run monitoring cannot ask that launcher whether a run's
process lives, so only ``dagster/max_runtime`` (30 minutes for sensor runs) ends them, while
each holds a place in the run queue and in its sensor's limit of runs in flight. The soak saw
one such run after every code-server restart. This sensor is evaluated in the code server, on
the host where those processes ran, so it can ask the operating system. Launchers that put runs
elsewhere (Kubernetes, Docker) are checked by run monitoring itself; there it does nothing.
"""

from __future__ import annotations

import time

import dagster as dg
import psutil
from dagster._core.launcher import DefaultRunLauncher

# A process younger than this may be a run still recording its start.
GRACE_SECONDS = 30.0
PROCESS_STARTED = "Started process for run (pid: "


def run_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid the run's process recorded when it started, and when it recorded it."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    for event in reversed(events):  # a resumed run records a new process
        message = event.dagster_event.message if event.dagster_event else ""
        if message and message.startswith(PROCESS_STARTED):
            pid = message[len(PROCESS_STARTED) :].split(")", 1)[0]
            if pid.isdigit():
                return int(pid), event.timestamp
    return None


def process_lives(pid: int, recorded_at: float) -> bool:
    """Whether ``pid`` is still the process that recorded it (not a zombie, not a later process
    given the same pid)."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= recorded_at + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def fail_orphaned_runs(
    instance: dg.DagsterInstance, location_name: str, grace_seconds: float = GRACE_SECONDS
) -> list[str]:
    """Fails this code location's STARTED runs whose process is gone; returns their ids. Runs of
    other code locations ran elsewhere (another container, say) and are never touched."""
    now, failed = time.time(), []
    started = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=500)
    for run in started:
        origin = run.remote_job_origin
        if origin is None or origin.location_name != location_name:
            continue
        found = run_process(instance, run.run_id)
        if found is None or now - found[1] < grace_seconds or process_lives(*found):
            continue
        instance.report_run_failed(
            run,
            f"The run's process (pid {found[0]}) is gone, most likely killed with its code server; "
            "failed so that run retries launch it again.",
        )
        failed.append(run.run_id)
    return failed


@dg.sensor(
    name="orphaned_runs_sensor", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING
)
def orphaned_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Fails this location's STARTED runs whose process no longer exists (default run launcher)."""
    launcher = context.instance.run_launcher
    if not isinstance(launcher, DefaultRunLauncher):
        return dg.SkipReason(f"runs are launched by {type(launcher).__name__}: run monitoring checks them")
    if context.code_location_origin is None:
        return dg.SkipReason("evaluated outside a code location: no runs of its own to check")
    failed = fail_orphaned_runs(context.instance, context.code_location_origin.location_name)
    if failed:
        context.log.warning(f"failed {len(failed)} runs whose process is gone: {', '.join(failed)}")
        return dg.SkipReason(f"failed {len(failed)} runs whose process is gone: {', '.join(failed)}")
    return dg.SkipReason("every started run's process lives")
