"""Runs whose process is gone, failed at once so that run retries launch them again.

With Dagster's default run launcher a run is a child process of the code server. When the code
server dies with its children (its container restarted, its process group killed, the OOM
killer), their runs stay STARTED: run monitoring cannot ask that launcher whether a run's
process lives, so only ``dagster/max_runtime`` (30 minutes for sensor runs) ends them, while
each holds a place in the run queue and in its sensor's limit of runs in flight. The soak saw
one such run after every code-server restart. This sensor is evaluated in the code server, on
the host where those processes ran, so it can ask the operating system. Launchers that put runs
elsewhere (Kubernetes, Docker) are checked by run monitoring itself; there it does nothing.

A process is known by its pid and its start time in clock ticks since boot, which the run
records itself (``record_run_process``) and the kernel reports for the pid now: both come from
the same counter, so no step of the wall clock, either way, makes a live run look gone (an
earlier rule compared the wall-clock time of the run's first event with the process's start and
failed two live runs after a 24 s step). A pid given to a later process has another start. A
run that recorded nothing yet is failed only when its pid is gone altogether.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import dagster as dg
import psutil
from dagster._core.definitions.run_request import DagsterRunReaction
from dagster._core.launcher import DefaultRunLauncher

from embedding_assets.lib.processes import start_ticks

# A run younger than this may not have recorded its process yet.
GRACE_SECONDS = 30.0
PROCESS_STARTED = "Started process for run (pid: "
PROCESS_TAG = "embedding_assets/process"

_recorded: set[tuple[str, int]] = set()


@dataclass(frozen=True)
class RunProcess:
    """The identity a run's process records: its pid and its start ticks."""

    pid: int
    ticks: int | None

    def dump(self) -> str:
        return f"{self.pid}:{'' if self.ticks is None else self.ticks}"

    @classmethod
    def parse(cls, raw: str | None) -> RunProcess | None:
        pid, _, ticks = (raw or "").partition(":")
        if not pid.isdigit():
            return None
        return cls(int(pid), int(ticks) if ticks.isdigit() else None)

    @classmethod
    def current(cls) -> RunProcess:
        return cls(os.getpid(), start_ticks(os.getpid()))


StepContext = dg.OpExecutionContext | dg.AssetExecutionContext | dg.AssetCheckExecutionContext


def record_run_process(context: StepContext) -> None:
    """Tags the run with this process's identity; every step calls it first (any step may be a
    run's first: a check executed alone from the UI, say), once per run and process."""
    op_context = getattr(context, "op_execution_context", context)
    run_id = op_context.run.run_id
    me = RunProcess.current()
    if (run_id, me.pid) in _recorded:
        return
    op_context.instance.add_run_tags(run_id, {PROCESS_TAG: me.dump()})
    _recorded.add((run_id, me.pid))


def run_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid Dagster recorded for the run's process when it started, and when (wall clock)."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    for event in reversed(events):  # a resumed run records a new process
        message = event.dagster_event.message if event.dagster_event else ""
        if message and message.startswith(PROCESS_STARTED):
            pid = message[len(PROCESS_STARTED) :].split(")", 1)[0]
            if pid.isdigit():
                return int(pid), event.timestamp
    return None


def process_lives(pid: int, recorded: RunProcess | None) -> bool:
    """Whether ``pid`` is still the run's process. With the identity the run recorded for that
    pid, its start ticks must match; without one, any live process with the pid counts: a
    safety sensor fails a run only when it is sure."""
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    if recorded is None or recorded.pid != pid or recorded.ticks is None:
        return True
    now = start_ticks(pid)
    return now is None or now == recorded.ticks  # None: the process ended meanwhile, or no /proc


def orphaned_runs(
    instance: dg.DagsterInstance, location_name: str, grace_seconds: float = GRACE_SECONDS
) -> list[tuple[dg.DagsterRun, int]]:
    """This code location's STARTED runs whose process is gone, with the pid it had. Runs of
    other code locations ran elsewhere (another container, say) and are never touched."""
    now, gone = time.time(), []
    started = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=500)
    for run in started:
        origin = run.remote_job_origin
        if origin is None or origin.location_name != location_name:
            continue
        found = run_process(instance, run.run_id)
        if found is None:
            continue
        pid, started_at = found
        recorded = RunProcess.parse(run.tags.get(PROCESS_TAG))
        # the grace only spares a run that may not have recorded its process yet: once it has,
        # no wall-clock time takes part in the decision
        if (recorded is None or recorded.pid != pid) and abs(now - started_at) < grace_seconds:
            continue
        if not process_lives(pid, recorded):
            gone.append((run, pid))
    return gone


def fail_orphaned_runs(
    instance: dg.DagsterInstance, location_name: str, grace_seconds: float = GRACE_SECONDS
) -> list[str]:
    """Fails this code location's STARTED runs whose process is gone; returns their ids."""
    failed = []
    for run, pid in orphaned_runs(instance, location_name, grace_seconds):
        instance.report_run_failed(
            run,
            f"The run's process (pid {pid}) is gone, most likely killed with its "
            "code server; failed so that run retries launch it again.",
        )
        failed.append(run.run_id)
    return failed


@dg.sensor(
    name="orphaned_runs_sensor", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING
)
def orphaned_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason | list[DagsterRunReaction]:
    """Fails this location's STARTED runs whose process no longer exists (default run launcher).
    A tick that fails runs is a success in the UI, each failed run named as its origin."""
    launcher = context.instance.run_launcher
    if not isinstance(launcher, DefaultRunLauncher):
        return dg.SkipReason(f"runs are launched by {type(launcher).__name__}: run monitoring checks them")
    if context.code_location_origin is None:
        return dg.SkipReason("evaluated outside a code location: no runs of its own to check")
    failed = fail_orphaned_runs(context.instance, context.code_location_origin.location_name)
    if not failed:
        return dg.SkipReason("every started run's process lives")
    context.log.warning(f"failed {len(failed)} runs whose process is gone: {', '.join(failed)}")
    return [
        DagsterRunReaction(
            dagster_run=context.instance.get_run_by_id(run_id), run_status=dg.DagsterRunStatus.FAILURE
        )
        for run_id in failed
    ]
