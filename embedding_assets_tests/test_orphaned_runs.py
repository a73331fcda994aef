"""Runs left STARTED by a process that is gone are failed (so that run retries relaunch them);
live runs, and runs of other code locations, are not touched."""

import os
import subprocess
import time

import dagster as dg
import psutil
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test

from embedding_assets.defs.orphaned_runs import (
    PROCESS_STARTED,
    fail_orphaned_runs,
    orphaned_runs_sensor,
    process_lives,
)


def _started_run(instance: dg.DagsterInstance, location: str, pid: int) -> str:
    server = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=4000, location_name=location)
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(server, "__repository__"), "embed_documents")
    run = create_run_for_test(
        instance, job_name="embed_documents", status=dg.DagsterRunStatus.STARTED, remote_job_origin=origin
    )
    instance.report_engine_event(f"{PROCESS_STARTED}{pid}).", run)
    return run.run_id


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_run_whose_process_is_gone_is_failed_and_the_others_are_kept():
    with dg.instance_for_test() as instance:
        dead = _started_run(instance, "embedding_assets", _dead_pid())
        alive = _started_run(instance, "embedding_assets", os.getpid())
        elsewhere = _started_run(instance, "another_location", _dead_pid())  # ran in another container

        assert fail_orphaned_runs(instance, "embedding_assets", grace_seconds=0) == [dead]

        assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
        message = [e.message for e in instance.all_logs(dead) if "is gone" in (e.message or "")]
        assert message and "run retries" in message[0]
        assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
        assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.STARTED
        # a second pass finds nothing more
        assert fail_orphaned_runs(instance, "embedding_assets", grace_seconds=0) == []


def test_a_pid_given_to_a_later_process_does_not_keep_a_dead_run_alive():
    created = psutil.Process(os.getpid()).create_time()
    assert process_lives(os.getpid(), recorded_at=created + 5)  # recorded by this process
    assert not process_lives(os.getpid(), recorded_at=created - 100)  # by an earlier one, gone
    assert not process_lives(_dead_pid(), recorded_at=time.time())


def test_a_young_run_is_left_alone_and_the_sensor_skips_without_a_code_location():
    with dg.instance_for_test() as instance:
        young = _started_run(instance, "embedding_assets", _dead_pid())
        assert fail_orphaned_runs(instance, "embedding_assets") == []  # within the 30 s grace
        assert instance.get_run_by_id(young).status == dg.DagsterRunStatus.STARTED

        result = orphaned_runs_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SkipReason) and "outside a code location" in result.skip_message
