"""Run and check failures reach the webhook."""

import http.server
import json
import threading

import dagster as dg
import pytest

from embedding_assets.defs.alerts import AlertWebhookResource, check_failure_alert, run_failure_alert


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received.clear()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.servers)])
def instance(request, tmp_path):
    """A persistent instance: SQLite (run-sharded event log, the local default) or PostgreSQL."""
    if request.param == "sqlite":
        with dg.DagsterInstance.from_config(str(tmp_path)) as sqlite:
            yield sqlite
    else:
        with dg.DagsterInstance.from_config(request.getfixturevalue("postgres_home")) as pg:
            yield pg


def test_failed_runs_and_checks_are_posted_to_the_webhook(webhook, instance):
    url, received = webhook
    alerts = AlertWebhookResource(url=url)

    @dg.asset
    def breaks() -> None:
        raise RuntimeError("boom")

    @dg.asset
    def fine() -> int:
        return 1

    @dg.asset_check(asset=fine)
    def never_passes() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, description="always fails")

    @dg.asset_check(asset=fine)
    def passes() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    failed = dg.materialize([breaks], instance=instance, raise_on_error=False)
    assert not failed.success
    failure_event = next(e for e in failed.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        dagster_event=failure_event,
        resources={"alerts": alerts},
    )
    run_failure_alert(context.for_run_failure())
    assert received[-1]["event"] == "run_failure" and received[-1]["run_id"] == failed.run_id

    definitions = dg.Definitions(assets=[fine], asset_checks=[never_passes, passes])

    def tick(cursor: str | None) -> str | None:
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"alerts": alerts}, definitions=definitions
        ) as ctx:
            check_failure_alert(ctx)
            return ctx.cursor

    dg.materialize([fine, never_passes, passes], instance=instance)  # before the sensor started
    cursor = tick(None)
    assert received[-1]["event"] == "run_failure"  # history is not replayed
    result = dg.materialize([fine, never_passes, passes], instance=instance)
    cursor = tick(cursor)
    assert received[-1]["event"] == "check_failure" and received[-1]["check"] == "never_passes"
    assert received[-1]["run_id"] == result.run_id
    count = len(received)
    cursor = tick(cursor)  # nothing new: nothing posted twice
    assert len(received) == count
    dg.materialize([fine, never_passes, passes], instance=instance)
    tick(cursor)
    assert len(received) == count + 1  # one failure per failed evaluation, the passing check none
