"""Prometheus metrics of the store, for `embedding-assets metrics` (GET /metrics).

Everything is read at scrape time from what already exists: the store audit's last findings
(audit/findings.py, saved beside the shard state), the Dagster instance (runs, the change sensor's
cursor) and MongoDB (the oldest change the sensor has not taken yet). Names follow Prometheus'
conventions: one prefix, base units (seconds, bytes), ratios 0..1, ``_total`` for counters, no
per-document labels. The alert rules in deploy/prometheus/ are written against these names.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from embedding_assets.audit.findings import MODES, latest
from embedding_assets.lib.change_tracking import ChangeCursor

PREFIX = "embedding_assets"
CHANGE_SENSOR = "document_changes_sensor"
PIPELINE_JOB = "embed_documents"
# Runs launched from the UI's asset graph (Materialize, backfills, a check's Execute) run as this
# implicit job: they are pipeline runs too.
ASSET_GRAPH_JOB = "__ASSET_JOB"
PIPELINE_JOBS = (PIPELINE_JOB, ASSET_GRAPH_JOB)


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


class StoreCollector(Collector):
    """The metrics, computed at each scrape.

    ``instance``: returns the Dagster instance (None: run metrics are left out);
    ``change_cursor``: returns the change sensor's cursor (``sensor_cursor`` reads it from an
    instance); ``oldest_change_after``: the ``modified_at`` of the oldest document changed after
    a time and before now, or None (MongoDB). Without them the sensor metrics are left out.
    ``probes``: per component (``mongodb``, ``redis``), a call that raises when it cannot be
    reached; a server that is down is reported as such, never as a failed scrape.
    """

    def __init__(
        self,
        audit_dir: str,
        instance: Callable[[], Any] | None = None,
        change_cursor: Callable[[], str | None] | None = None,
        oldest_change_after: Callable[[dt.datetime], dt.datetime | None] | None = None,
        probes: dict[str, Callable[[], object]] | None = None,
    ) -> None:
        self.audit_dir = audit_dir
        self.instance = instance
        self.change_cursor = change_cursor
        self.oldest_change_after = oldest_change_after
        self.probes = probes or {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        down = self._down()
        yield from self._audit()
        yield from self._up(down)
        instance = self.instance() if self.instance else None
        if instance is not None:
            yield from self._runs(instance)
            yield from self._daemon(instance)
            yield from self._ticks(instance)
        if self.change_cursor is not None:
            yield from self._sensor(ChangeCursor.parse(self.change_cursor()), "mongodb" not in down)

    def _down(self) -> set[str]:
        """The components whose probe failed, probed at once: a scrape must answer inside
        Prometheus' timeout (5 s at a 5 s interval) while any of them is down."""
        if not self.probes:
            return set()

        def fails(probe: Callable[[], object]) -> bool:
            try:
                probe()
                return False
            except Exception:  # down, refusing, timing out: all mean "not serving"
                return True

        with ThreadPoolExecutor(len(self.probes)) as pool:
            failed = dict(zip(self.probes, pool.map(fails, self.probes.values()), strict=True))
        return {component for component, fail in failed.items() if fail}

    def _up(self, down: set[str]) -> Iterator[GaugeMetricFamily]:
        if not self.probes:
            return
        up = GaugeMetricFamily(
            f"{PREFIX}_up",
            "1 when the component answered this scrape, 0 when it did not.",
            labels=["component"],
        )
        for component in self.probes:
            up.add_metric([component], 0 if component in down else 1)
        yield up

    def _daemon(self, instance: Any) -> Iterator[GaugeMetricFamily]:
        """The oldest of the daemon's heartbeats (sensors, schedules, run queue, monitoring): a
        stopped daemon launches nothing, and nothing else says so."""
        try:
            beats = instance.get_daemon_heartbeats()
        except Exception:  # storage unreachable: the run metrics above fail the same way
            return
        if beats:
            yield _gauge(
                "daemon_heartbeat_age_seconds",
                "Seconds since the Dagster daemon's oldest heartbeat (its threads beat every 30 s).",
                max(0.0, time.time() - min(b.timestamp for b in beats.values())),
            )

    def _ticks(self, instance: Any) -> Iterator[GaugeMetricFamily]:
        """Each sensor's last tick: when, and whether it failed (a source, a store or the code
        server unreachable: the sensor takes nothing while its ticks fail)."""
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import InstigatorStatus, TickStatus

        at = GaugeMetricFamily(
            f"{PREFIX}_sensor_last_tick_timestamp_seconds", "When the sensor last ticked.", labels=["sensor"]
        )
        ok = GaugeMetricFamily(
            f"{PREFIX}_sensor_last_tick_ok",
            "1 when the sensor's last finished tick succeeded or skipped, 0 when it failed.",
            labels=["sensor"],
        )
        try:
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        except Exception:  # an instance without schedule storage (ephemeral), or unreachable
            return
        for state in states:
            if state.status == InstigatorStatus.STOPPED:
                continue
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=3)
            if not ticks:
                continue
            at.add_metric([state.instigator_name], ticks[0].timestamp)
            finished = [t for t in ticks if t.status != TickStatus.STARTED]
            if finished:
                ok.add_metric([state.instigator_name], 0 if finished[0].status == TickStatus.FAILURE else 1)
        yield at
        yield ok

    def _audit(self) -> Iterator[GaugeMetricFamily]:
        for mode in MODES:
            summary = latest(self.audit_dir, mode)
            if summary is not None:
                yield _gauge(
                    "last_audit_timestamp_seconds",
                    "When the store audit of this mode last ran (feature store clock).",
                    summary["at"],
                    {"mode": mode},
                )
        summary = latest(self.audit_dir)
        if summary is None:
            return
        version = {"version": summary["version"] or "none"}
        yield _gauge(
            "coverage_ratio",
            "Live documents with text whose entry is current.",
            summary["coverage_ratio"],
            version,
        )
        yield _gauge(
            "stale_ratio", "Entries older than their document or than 24 h.", summary["stale_ratio"], version
        )
        yield _gauge(
            "orphan_ratio", "Entries of documents that no longer exist.", summary["extra_ratio"], version
        )
        yield _gauge(
            "failed_ratio", "Documents with text that failed after retries.", summary["failed_ratio"], version
        )
        yield _gauge("entries", "Entries of the active version.", summary["entries_total"], version)
        yield _gauge("entry_size_bytes", "Server memory per entry.", summary["bytes_per_entry"], version)
        yield _gauge(
            "control_plane_ok",
            "1 when the active pointer, version, layout and calibration are present and agree.",
            0 if summary["control_problems"] else 1,
            version,
        )
        yield _gauge("audit_duration_seconds", "How long the last audit took.", summary["seconds"], version)
        yield _gauge(
            "audit_examined_documents", "Documents the last audit examined.", summary["examined"], version
        )
        ages = GaugeMetricFamily(
            f"{PREFIX}_entry_age_seconds",
            "Age of entries (since their document was read).",
            labels=["version", "quantile"],
        )
        for key, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99"), ("max", "1")):
            ages.add_metric([version["version"], quantile], summary["ages"].get(key, 0.0))
        yield ages

    def _runs(self, instance: Any) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from dagster import DagsterRunStatus, RunsFilter

        runs = CounterMetricFamily(
            f"{PREFIX}_runs", "Pipeline runs that ended, by status.", labels=["status"]
        )
        for status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE):
            count = sum(
                instance.get_runs_count(RunsFilter(job_name=job, statuses=[status])) for job in PIPELINE_JOBS
            )
            runs.add_metric([status.value.lower()], count)
        yield runs
        ends = []
        for job in PIPELINE_JOBS:
            records = instance.get_run_records(
                RunsFilter(job_name=job, statuses=[DagsterRunStatus.SUCCESS]), limit=50
            )
            # of the asset graph's runs, those that materialized (not a check's Execute alone)
            ends += [
                r.end_time
                for r in records
                if r.end_time and (job == PIPELINE_JOB or r.dagster_run.asset_selection)
            ][:1]
        if ends:
            yield _gauge(
                "last_success_timestamp_seconds", "When the last successful pipeline run ended.", max(ends)
            )

    def _sensor(self, cursor: ChangeCursor | None, source_up: bool = True) -> Iterator[GaugeMetricFamily]:
        if cursor is None:
            return
        yield _gauge(
            "change_cursor_timestamp_seconds",
            "The change sensor's position: documents modified up to here are taken.",
            cursor.modified_at.timestamp(),
        )
        if self.oldest_change_after is None or not source_up:  # no lag to report: `up` says why
            return
        try:
            pending = self.oldest_change_after(cursor.modified_at)
        except Exception:  # MongoDB unreachable: embedding_assets_up says so; no lag to report
            return
        lag = max(0.0, time.time() - cursor.modified_at.timestamp()) if pending else 0.0
        yield _gauge(
            "sensor_lag_seconds",
            "Now minus the change cursor while changes wait past it (0 when none wait).",
            lag,
        )


def sensor_cursor(instance: Any, name: str = CHANGE_SENSOR) -> str | None:
    """A sensor's cursor as the daemon stored it in the instance."""
    from dagster._core.definitions.run_request import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == name and state.instigator_data is not None:
            return state.instigator_data.cursor
    return None


def serve(port: int, collector: StoreCollector) -> Any:
    """Serve /metrics on ``port`` (0: any free port) in a background thread; returns the server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(collector)
    server, _thread = start_http_server(port, addr="0.0.0.0", registry=registry)
    return server
