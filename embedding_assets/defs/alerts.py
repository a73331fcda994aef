"""Alerts: failed runs and failed asset checks, posted to a webhook (logged when none is set)."""

import json
import logging
import urllib.request

import dagster as dg
import tenacity
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from pydantic import PrivateAttr

from embedding_assets import settings

log = logging.getLogger("embedding_assets.alerts")


class AlertNotSent(RuntimeError):
    """The webhook did not take an alert (after retries)."""


class AlertWebhookResource(dg.ConfigurableResource):
    """POSTs a JSON body to ``url`` (EA_ALERT_WEBHOOK: Slack-compatible ``text`` included)."""

    url: str = ""
    timeout_seconds: float = 10.0

    _sent: list[dict] = PrivateAttr(default_factory=list)

    def notify(self, event: str, summary: str, details: dict) -> None:
        body = {"text": f"[embedding-assets] {event}: {summary}", "event": event, **details}
        if not self.url:
            log.warning("alert (no EA_ALERT_WEBHOOK set): %s", body["text"])
            return
        try:
            self._post(body)
        except Exception as err:  # the URL is the webhook's secret: never in a message or a stack
            secrets = [self.url, *settings.url_secrets(self.url)]
            text = settings.redact(f"{type(err).__name__}: {err}", secrets)
            raise AlertNotSent(f"alert webhook {settings.webhook_shown(self.url)} failed: {text}") from None

    @tenacity.retry(
        wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=10),
        stop=tenacity.stop_after_attempt(5),
        reraise=True,
    )
    def _post(self, body: dict) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body, default=str).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            response.read()


@dg.run_failure_sensor(name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertWebhookResource) -> None:
    run = context.dagster_run
    alerts.notify(
        "run_failure",
        f"run {run.run_id} of {run.job_name} failed: {context.failure_event.message}",
        {"run_id": run.run_id, "job": run.job_name, "tags": dict(run.tags)},
    )


@dg.sensor(
    name="check_failure_alert", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING
)
def check_failure_alert(context: dg.SensorEvaluationContext, alerts: AlertWebhookResource) -> dg.SkipReason:
    """Failed evaluations of this code location's asset checks since the last tick.

    Read per check from the asset-check execution records, which every event log storage keeps
    (SQLite's run-sharded one included); the cursor is the last record id seen per check.
    """
    seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
    first_tick = not context.cursor
    notified = examined = 0
    for key in _check_keys(context):
        name = key.to_user_string()
        records = context.instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
        new = [r for r in records if r.id > seen.get(name, 0)]
        if records:
            seen[name] = max(seen.get(name, 0), max(r.id for r in records))
        if first_tick:  # alerts start now: what failed before the sensor ran is history
            continue
        for record in sorted(new, key=lambda r: r.id):
            examined += 1
            if record.status != AssetCheckExecutionRecordStatus.FAILED or record.event is None:
                continue
            evaluation = record.event.dagster_event.event_specific_data  # type: ignore[union-attr]
            notified += 1
            asset = key.asset_key.to_user_string()
            alerts.notify(
                "check_failure",
                f"{key.name} on {asset} failed: {evaluation.description}",
                {
                    "check": key.name,
                    "asset": asset,
                    "run_id": record.run_id,
                    "metadata": {k: v.value for k, v in evaluation.metadata.items()},
                },
            )
    context.update_cursor(json.dumps(seen, sort_keys=True))
    return dg.SkipReason(f"{notified} failed checks of {examined} evaluations notified")


def _check_keys(context: dg.SensorEvaluationContext) -> list[dg.AssetCheckKey]:
    """The asset checks of this code location."""
    definitions = context.repository_def
    if definitions is None:
        return []
    return sorted(definitions.asset_graph.asset_check_keys, key=lambda k: k.to_user_string())


alert_sensors = [run_failure_alert, check_failure_alert]
