"""Prometheus: the /metrics endpoint on a real store, and the alert rules under promtool."""

import datetime as dt
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from embedding_assets import settings
from embedding_assets.defs.assets import embedding_assets
from embedding_assets.defs.jobs import embed_documents
from embedding_assets.defs.resources import build_resources
from embedding_assets.dev.harness import audit, collection, load_sample
from embedding_assets.lib.change_tracking import ChangeCursor
from embedding_assets.metrics import StoreCollector, serve
from embedding_assets.sources.mongo import MongoDocumentSource

ROOT = Path(__file__).parents[1]
RULES = ROOT / "deploy" / "prometheus"


@pytest.mark.servers
@pytest.mark.slow
def test_metrics_describe_the_store_the_runs_and_the_sensor(pipeline_env):
    load_sample(pipeline_env, 30)
    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(  # resources from this test's environment
        assets=embedding_assets, jobs=[embed_documents], resources=build_resources()
    )
    job = defs.resolve_job_def("embed_documents")
    # two shards only: coverage is partial, and says so. One by the job, one as the UI's asset
    # graph launches it (the implicit __ASSET_JOB): both are pipeline runs
    assert job.execute_in_process(instance=instance, partition_key="shard-00").success
    from_graph = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, partition_key="shard-01"
    )
    assert from_graph.success and from_graph.dagster_run.job_name == "__ASSET_JOB"
    audit(instance, run_config={"ops": {"store_audit": {"config": {"mode": "full"}}}})
    source = MongoDocumentSource(pipeline_env["MONGO_URI"], pipeline_env["MONGO_DB"], "documents")
    behind = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    collection(pipeline_env).update_one(
        {"doc_id": "doc-000001"}, {"$set": {"modified_at": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)}}
    )
    cursor = ChangeCursor(behind, "doc-000000").dump()
    server = serve(
        0,
        StoreCollector(
            settings.audit_dir(),
            instance=lambda: instance,
            change_cursor=lambda: cursor,
            oldest_change_after=source.oldest_change_after,
        ),
    )
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
    families = {
        f.name: f for f in text_string_to_metric_families(text) if f.name.startswith("embedding_assets")
    }

    def value(name: str, **labels: str) -> float:
        for sample in families[name].samples:
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        raise KeyError((name, labels))

    expected = {
        "embedding_assets_coverage_ratio",
        "embedding_assets_stale_ratio",
        "embedding_assets_orphan_ratio",
        "embedding_assets_failed_ratio",
        "embedding_assets_entries",
        "embedding_assets_entry_size_bytes",
        "embedding_assets_entry_age_seconds",
        "embedding_assets_control_plane_ok",
        "embedding_assets_last_audit_timestamp_seconds",
        "embedding_assets_audit_duration_seconds",
        "embedding_assets_last_success_timestamp_seconds",
        "embedding_assets_runs",
        "embedding_assets_change_cursor_timestamp_seconds",
        "embedding_assets_sensor_lag_seconds",
    }
    assert expected <= set(families)
    for name, family in families.items():  # Prometheus' conventions
        assert re.fullmatch(r"embedding_assets_[a-z0-9_]+", name)
        if name.endswith("_ratio"):
            assert all(0 <= s.value <= 1 for s in family.samples), name
        assert not any("doc_id" in s.labels for s in family.samples)
    assert families["embedding_assets_runs"].type == "counter"
    # the job's run and the asset graph's (the audit above ran as an ephemeral job: not counted)
    assert value("embedding_assets_runs", status="success") == 2  # exposed as _total
    graph_end = instance.get_run_record_by_id(from_graph.run_id).end_time
    assert value("embedding_assets_last_success_timestamp_seconds") == pytest.approx(graph_end)
    entries = value("embedding_assets_entries")
    assert 0 < entries < 30 and value("embedding_assets_coverage_ratio") == pytest.approx(entries / 30)
    assert value("embedding_assets_control_plane_ok") == 1
    assert 100 < value("embedding_assets_entry_size_bytes") < 2000
    assert value("embedding_assets_entry_age_seconds", quantile="0.99") < 600
    assert value("embedding_assets_sensor_lag_seconds") == pytest.approx(3600, abs=120)  # a change waits
    assert value("embedding_assets_last_audit_timestamp_seconds", mode="full") > behind.timestamp()


def test_a_source_that_does_not_answer_is_reported_down_and_not_queried_again(tmp_path):
    """Prometheus drops a scrape that outlasts its timeout (5 s at a 5 s interval), and with it
    the `up` gauge the EmbeddingSourceDown alert reads (the soak saw it never fire): a stopped
    MongoDB costs the scrape one probe timeout, the probes run at once, and the lag query is not
    tried behind a failed probe."""
    from embedding_assets.dev.servers import free_port

    source = MongoDocumentSource(f"mongodb://127.0.0.1:{free_port()}", "db", "documents", timeout_ms=1500)
    asked: list[dt.datetime] = []

    def oldest_change_after(after: dt.datetime) -> dt.datetime | None:
        asked.append(after)
        return source.oldest_change_after(after)

    import threading

    together = threading.Barrier(2, timeout=10)  # answers only while the other probe runs too

    def answers_beside_the_other() -> None:
        together.wait()

    cursor = ChangeCursor(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), "doc-1").dump()
    collector = StoreCollector(
        str(tmp_path),
        change_cursor=lambda: cursor,
        oldest_change_after=oldest_change_after,
        probes={
            "mongodb": lambda: source.client.admin.command("ping"),
            "redis": answers_beside_the_other,
            "code_server": answers_beside_the_other,
        },
    )
    families = {f.name: f for f in collector.collect()}
    up = {s.labels["component"]: s.value for s in families["embedding_assets_up"].samples}
    # probed one after the other, the first barrier wait would break: both would read 0
    assert up == {"mongodb": 0, "redis": 1, "code_server": 1}
    assert asked == [] and "embedding_assets_sensor_lag_seconds" not in families
    assert "embedding_assets_change_cursor_timestamp_seconds" in families  # from Dagster, not MongoDB


def test_promtool_checks_and_unit_tests_the_alert_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("EA_REQUIRE_PROMTOOL"):  # CI installs it (.ci/run)
            pytest.fail("promtool is required here (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    checked = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    print(tested.stdout)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_is_complete_and_has_its_runbook_section():
    runbook = (ROOT / "docs" / "operations.md").read_text()
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", runbook, flags=re.MULTILINE)}
    rules = [r for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert "for" in rule, rule["alert"]
        notes = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(notes), rule["alert"]
        assert notes["runbook_url"].split("#")[1] in anchors, rule["alert"]
        used = set(re.findall(r"embedding_assets_[a-z0-9_]+", rule["expr"]))
        assert all(m.startswith("embedding_assets_") for m in used)
