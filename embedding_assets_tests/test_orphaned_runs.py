"""Runs left STARTED by a process that is gone are failed (so that run retries relaunch them);
live runs, whatever the wall clock did, and runs of other code locations, are not touched."""

import os
import subprocess
import sys
import time

import dagster as dg
import pytest
from dagster._core.definitions.run_request import DagsterRunReaction
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test

from embedding_assets.defs.orphaned_runs import (
    PROCESS_STARTED,
    PROCESS_TAG,
    RunProcess,
    fail_orphaned_runs,
    orphaned_runs_sensor,
    record_run_process,
)
from embedding_assets.lib.processes import start_ticks

LOCATION = "embedding_assets"
SERVER = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=4000, location_name=LOCATION)


def _started_run(
    instance: dg.DagsterInstance,
    pid: int,
    *,
    location: str = LOCATION,
    recorded: RunProcess | None = None,
    event_offset: float = 0.0,
) -> str:
    """A STARTED run whose process Dagster recorded as ``pid``, ``event_offset`` seconds from
    now by the wall clock (a clock step since), and which recorded ``recorded`` itself."""
    server = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=4000, location_name=location)
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(server, "__repository__"), "embed_documents")
    tags = {PROCESS_TAG: recorded.dump()} if recorded else {}
    run = create_run_for_test(
        instance,
        job_name="embed_documents",
        status=dg.DagsterRunStatus.STARTED,
        remote_job_origin=origin,
        tags=tags,
    )
    event = DagsterEvent(
        event_type_value=DagsterEventType.ENGINE_EVENT.value,
        job_name=run.job_name,
        message=f"{PROCESS_STARTED}{pid}).",
        event_specific_data=EngineEventData({}),
    )
    instance.report_dagster_event(event, run_id=run.run_id, timestamp=time.time() + event_offset)
    return run.run_id


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def child():
    """A live process other than this one (a run's process, as the code server sees it)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    deadline = time.time() + 5
    while start_ticks(process.pid) is None and time.time() < deadline:
        time.sleep(0.01)
    yield process
    process.kill()
    process.wait()


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


@pytest.mark.parametrize("step", [-60.0, 60.0, -86400.0, 3600.0])
def test_a_live_run_is_never_failed_whatever_the_wall_clock_did(child, step):
    """The run's first event was written ``step`` seconds away from its process's start as the
    wall clock now reads it: the identity the run recorded from the kernel's tick counter still
    matches, and a run that recorded nothing is kept while its pid lives."""
    with dg.instance_for_test() as instance:
        identity = RunProcess(child.pid, start_ticks(child.pid))
        recorded = _started_run(instance, child.pid, recorded=identity, event_offset=step)
        unrecorded = _started_run(instance, child.pid, event_offset=step)

        assert fail_orphaned_runs(instance, LOCATION, grace_seconds=0) == []
        assert _status(instance, recorded) == dg.DagsterRunStatus.STARTED
        assert _status(instance, unrecorded) == dg.DagsterRunStatus.STARTED


def test_a_dead_pid_and_a_reused_pid_are_failed_and_the_others_are_kept(child):
    with dg.instance_for_test() as instance:
        dead = _started_run(instance, _dead_pid())
        gone_pid = _dead_pid()
        dead_recorded = _started_run(instance, gone_pid, recorded=RunProcess(gone_pid, 12345))
        # the pid now belongs to another process: its start differs from what the run recorded
        reused = _started_run(instance, child.pid, recorded=RunProcess(child.pid, start_ticks(child.pid) - 1))
        alive = _started_run(instance, child.pid, recorded=RunProcess(child.pid, start_ticks(child.pid)))
        elsewhere = _started_run(instance, _dead_pid(), location="another_location")

        failed = fail_orphaned_runs(instance, LOCATION, grace_seconds=0)

        assert sorted(failed) == sorted([dead, dead_recorded, reused])
        for run_id in failed:
            assert _status(instance, run_id) == dg.DagsterRunStatus.FAILURE
            message = [e.message for e in instance.all_logs(run_id) if "is gone" in (e.message or "")]
            assert message and "run retries" in message[0]
        assert _status(instance, alive) == dg.DagsterRunStatus.STARTED
        assert _status(instance, elsewhere) == dg.DagsterRunStatus.STARTED
        assert fail_orphaned_runs(instance, LOCATION, grace_seconds=0) == []  # nothing more


def test_a_young_run_that_recorded_nothing_is_left_alone():
    with dg.instance_for_test() as instance:
        young = _started_run(instance, _dead_pid())
        assert fail_orphaned_runs(instance, LOCATION) == []  # within the 30 s grace
        assert _status(instance, young) == dg.DagsterRunStatus.STARTED


def test_the_identity_is_the_kernels_start_of_the_process(child):
    me = RunProcess.current()
    assert me.pid == os.getpid() and me.ticks == start_ticks(os.getpid())
    assert start_ticks(child.pid) >= me.ticks  # started after this process, on the same counter
    assert start_ticks(_dead_pid()) is None
    assert RunProcess.parse(me.dump()) == me
    assert RunProcess.parse(None) is None and RunProcess.parse("x:1") is None


def test_a_run_records_its_process_in_its_first_step():
    @dg.op
    def first(context: dg.OpExecutionContext) -> None:
        record_run_process(context)
        record_run_process(context)  # once per run and process

    @dg.job
    def job() -> None:
        first()

    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
        tags = instance.get_run_by_id(result.run_id).tags
        assert RunProcess.parse(tags[PROCESS_TAG]) == RunProcess.current()


def test_a_tick_that_fails_runs_says_so_and_one_outside_a_location_skips():
    with dg.instance_for_test() as instance:
        young = _started_run(instance, _dead_pid())
        result = orphaned_runs_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SkipReason) and "outside a code location" in result.skip_message
        assert _status(instance, young) == dg.DagsterRunStatus.STARTED

        old = _started_run(instance, _dead_pid(), event_offset=-120)
        context = dg.SensorEvaluationContext(
            instance_ref=None,
            last_tick_completion_time=None,
            last_run_key=None,
            cursor=None,
            repository_name=None,
            instance=instance,
            code_location_origin=SERVER,
        )
        reactions = orphaned_runs_sensor(context)
        # a tick that returns run reactions is a success in the UI, each run named as its origin
        assert [type(r) for r in reactions] == [DagsterRunReaction]
        assert reactions[0].dagster_run.run_id == old
        assert reactions[0].run_status == dg.DagsterRunStatus.FAILURE
        assert _status(instance, old) == dg.DagsterRunStatus.FAILURE
        assert _status(instance, young) == dg.DagsterRunStatus.STARTED
