"""Alerts: failed runs and failed asset checks, posted to a webhook (logged when none is set)."""

import json
import logging
import urllib.request
import warnings

import dagster as dg
import tenacity
from pydantic import PrivateAttr

log = logging.getLogger("embedding_assets.alerts")


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
        self._post(body)

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
    """Failed asset check evaluations since the last tick (the cursor is the event storage id)."""
    after = int(context.cursor) if context.cursor else None
    with warnings.catch_warnings():
        # deprecated for 2.0 with no replacement yet for "every check evaluation after a cursor"
        warnings.simplefilter("ignore", DeprecationWarning)
        records = context.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
            limit=500,
            ascending=True,
        )
    failed = 0
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        if not evaluation.passed:
            failed += 1
            asset = evaluation.asset_key.to_user_string()
            alerts.notify(
                "check_failure",
                f"{evaluation.check_name} on {asset} failed: {evaluation.description}",
                {
                    "check": evaluation.check_name,
                    "asset": asset,
                    "run_id": record.run_id,
                    "metadata": {k: v.value for k, v in evaluation.metadata.items()},
                },
            )
    if records:
        context.update_cursor(str(records[-1].storage_id))
    return dg.SkipReason(f"{failed} failed checks of {len(records)} evaluations notified")


alert_sensors = [run_failure_alert, check_failure_alert]
