"""What deploys: the PostgreSQL instance config; the code location in a fresh clone."""

import itertools
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from embedding_assets.dev.servers import free_port, stop_groups


def test_deployment_instance_config_runs_on_postgres(postgres_home):
    with dg.DagsterInstance.from_config(postgres_home) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
        assert instance.run_coordinator.dequeue_interval_seconds == 1  # a delta waits less
        # a run dequeued while the code server restarts waits for it instead of failing
        assert instance.get_concurrency_config().run_queue_config.max_user_code_failure_retries == 10
        # each sensor ticks on its own cadence, not after the others in turn
        assert instance.get_settings("sensors") == {"use_threads": True, "num_workers": 4}

        @dg.asset
        def probe() -> int:
            return 1

        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id) is not None


ROOT = Path(__file__).parents[1]
OURS = ("MONGO_", "REDIS_", "EA_", "DAGSTER_")


def _fresh_env() -> dict[str, str]:
    """The environment of a fresh clone: none of our settings, no DAGSTER_HOME."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OURS)}


def _fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    for name in ("dagster.yaml", "workspace.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name if clone.exists() else _mkdir(clone) / name)
    return clone


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_fresh_clone_validates_without_any_environment(tmp_path):
    clone = _fresh_clone(tmp_path)
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "embedding_assets.definitions"],
        cwd=clone,
        env=_fresh_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "postgres" not in (ROOT / "dagster.yaml").read_text()
    assert "postgres" in (ROOT / "deploy" / "dagster.yaml").read_text()


@pytest.mark.slow
def test_fresh_clone_dagster_dev_serves_the_ui(tmp_path):
    clone = _fresh_clone(tmp_path)
    port = free_port()
    dagster = Path(sys.executable).with_name("dagster")
    process = subprocess.Popen(
        [str(dagster), "dev", "-m", "embedding_assets.definitions", "-p", str(port)],
        cwd=clone,
        env=_fresh_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150
        body = ""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                query = b'{"query": "{ assetNodes { assetKey { path } } }"}'
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query,
                    headers={"Content-Type": "application/json"},
                )
                body = urllib.request.urlopen(request, timeout=5).read().decode()
                if "feature_store_entries" in body:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert "feature_store_entries" in body, process.stdout.read1().decode() if process.stdout else ""
        for name in ("document_snapshots", "chunked_text", "document_vectors"):
            assert name in body
    finally:
        stop_groups(process)


# -- a deployment's processes on this machine ---------------------------------------------------
BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
  }
}
"""
ASSETS = ["document_snapshots", "chunked_text", "document_vectors", "feature_store_entries"]
ENTRY_CHECKS = """
{ assetNodeOrError(assetKey: {path: ["feature_store_entries"]}) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks {
      name description
      executionForLatestMaterialization { status evaluation { success description } } } } } } } }
"""


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    import json

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def start_deployment(
    folder: Path, env: dict[str, str], logs: Path, processes: dict[str, subprocess.Popen]
) -> int:
    """A gRPC code server, a webserver and a daemon as separate processes (added to ``processes``,
    which the caller stops), serving once the webserver lists the assets; returns its port."""
    grpc_port, web_port = free_port(), free_port()
    workspace = folder / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - grpc_server:\n"
        f"      host: 127.0.0.1\n      port: {grpc_port}\n      location_name: embedding_assets\n"
    )
    bin_dir = Path(sys.executable).parent
    logs.mkdir(exist_ok=True)
    commands = {
        "code-server": [
            str(bin_dir / "dagster"), "code-server", "start", "-m", "embedding_assets.definitions",
            "-h", "127.0.0.1", "-p", str(grpc_port),
        ],
        "webserver": [
            str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port),
        ],
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
    }  # fmt: skip
    for name, command in commands.items():
        processes[name] = subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdout=open(logs / f"{name}.log", "w"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 240
    nodes = ""
    while time.monotonic() < deadline and "feature_store_entries" not in nodes:
        try:
            nodes = str(_graphql(web_port, "{ assetNodes { assetKey { path } } }"))
        except OSError:
            time.sleep(1)
    assert "feature_store_entries" in nodes, _tails(logs)
    return web_port


def _machine_redis(default: str) -> str:
    """The machine's Redis 7 (127.0.0.1:6379, the test database flushed), else the embedded one."""
    import redis

    from embedding_assets_tests.conftest import redis_test_db

    url = f"redis://127.0.0.1:6379/{redis_test_db()}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        client.flushdb()
        client.close()
        return url
    except redis.RedisError:
        return default


@pytest.mark.slow
def test_a_backfill_launched_through_graphql_runs_as_parallel_runs_on_postgres(
    postgres_home, pipeline_env, tmp_path, monkeypatch, measure, static_dir
):
    """Webserver, daemon and a gRPC code server as separate processes, on PostgreSQL: a backfill
    of every shard launched through GraphQL runs as 4 runs of 4 shards, at once, each reading its
    own shards; its runs are in PostgreSQL and the store equals the collection.

    On the static tier: what is tested is the orchestration, and four runs each loading the
    transformer on two cores took six minutes of the suite (the tiers' own tests are elsewhere)."""
    import psycopg2
    from dagster._core.execution.backfill import BulkActionStatus

    from embedding_assets.defs.partitions import NUM_SHARDS
    from embedding_assets.dev.harness import collection, load_sample
    from embedding_assets.lib.identity import doc_key
    from embedding_assets.lib.sharding import shard_index, shard_of
    from embedding_assets.stores.feature_store import FeatureStore

    redis_url = _machine_redis(pipeline_env["REDIS_URL"])
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("EA_SHARDS_PER_RUN", "4")
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    monkeypatch.setenv("DAGSTER_HOME", postgres_home)
    # an edit is made by hand below while the daemon's runs audit the store: as in production, a
    # store-wide audit leaves documents changed this recently to the runs that take them (the
    # suite's default of 0 says no change is ever in flight, which is not so here)
    monkeypatch.setenv("EA_AUDIT_GRACE_SECONDS", "60")
    docs = load_sample(pipeline_env, 160)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    logs = tmp_path / "logs"
    processes: dict[str, subprocess.Popen] = {}
    try:
        web_port = start_deployment(tmp_path, env, logs, processes)

        launched = _graphql(
            web_port,
            BACKFILL,
            {
                "params": {
                    "assetSelection": [{"path": [a]} for a in ASSETS],
                    "allPartitions": True,
                    "fromFailure": False,
                    "title": "first fill",
                }
            },
        )["data"]["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        with dg.DagsterInstance.from_config(postgres_home) as instance:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                backfill = instance.get_backfill(backfill_id)
                if backfill.status != BulkActionStatus.REQUESTED:
                    break
                time.sleep(2)
            assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, (backfill.status, _tails(logs))
            records = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            by_run = {
                r.dagster_run.run_id: [
                    e.event_log_entry.asset_materialization
                    for e in instance.get_records_for_run(
                        r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
                    ).records
                ]
                for r in records
            }
        # what the UI's Checks tab reads: the labeled-set check, its result and why
        # (a run the daemon's sensors launched after the backfill may still be evaluating it)
        deadline = time.monotonic() + 180
        while True:
            node = _graphql(web_port, ENTRY_CHECKS)["data"]["assetNodeOrError"]
            checks = node["assetChecksOrError"]["checks"]
            quality = next(c for c in checks if c["name"] == "retrieval_quality")
            latest = quality["executionForLatestMaterialization"]
            if latest["status"] != "IN_PROGRESS" or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert "labeled set" in quality["description"], quality
        assert latest["status"] == "SUCCEEDED" and latest["evaluation"]["success"], quality
        assert latest["evaluation"]["description"].startswith("labeled set: 0."), quality
        ui = _what_the_ui_shows(web_port, pipeline_env, postgres_home, docs)
    finally:
        stop_groups(*processes.values())
    # the backfill's 4 runs and the check's Execute (the asset graph's __ASSET_JOB) count too
    assert ui["runs_success"] >= ui["of_job"] + 5, ui

    # 4 runs of 4 shards, all succeeded, at least two of them executing at the same time
    assert len(records) == 4
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    spans = sorted((r.start_time, r.end_time) for r in records)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    # each run read only its own shards: its snapshot rows are the documents of those shards
    per_shard: dict[int, int] = {}
    for d in docs:
        s = shard_of(doc_key(d["doc_id"]), NUM_SHARDS)
        per_shard[s] = per_shard.get(s, 0) + 1
    for run_id, materializations in by_run.items():
        snapshots = [m for m in materializations if m.asset_key.path == ["document_snapshots"]]
        shards = {shard_index(m.partition) for m in snapshots}
        assert len(shards) == 4, run_id
        assert snapshots[0].metadata["run_rows"].value == sum(per_shard.get(s, 0) for s in shards)
        for m in snapshots:  # each shard's own figures on its partition
            assert m.metadata["rows"].value == per_shard.get(shard_index(m.partition), 0)
    # the runs are PostgreSQL's
    with psycopg2.connect(
        host=os.environ["DAGSTER_PG_HOST"],
        port=os.environ["DAGSTER_PG_PORT"],
        user=os.environ["DAGSTER_PG_USER"],
        password=os.environ["DAGSTER_PG_PASSWORD"],
        dbname=os.environ["DAGSTER_PG_DB"],
    ) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT run_id FROM runs WHERE status = 'SUCCESS'")
        assert set(by_run) <= {row[0] for row in cursor.fetchall()}
    store = FeatureStore.from_url(redis_url)
    assert measure(collection(pipeline_env), store, store.control.active_version(), "4 parallel runs").none


AUDIT_CHECKS = ["coverage", "staleness", "orphans", "failed_documents", "entry_validity", "control_plane"]
CHECK_STATES = """
{ assetNodeOrError(assetKey: {path: ["feature_store_entries"]}) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks {
      name canExecuteIndividually
      executionForLatestMaterialization { runId status evaluation { success description } } } } } } } }
"""
EXECUTE = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status jobName tags { key value }
  assetMaterializations { assetKey { path } partition } } } }"""
MATERIALIZED = """query($id: ID!) { runOrError(runId: $id) { ... on Run { assetMaterializations {
  assetKey { path } partition metadataEntries { label ... on BoolMetadataEntry { boolValue }
  ... on IntMetadataEntry { intValue } } } } } }"""
RUNS = """{ runsOrError(limit: 50) { ... on Runs { results { runId status tags { key value } } } } }"""
FILTERED_RUNS = """query($filter: RunsFilter!) { runsOrError(filter: $filter, limit: 50) {
  ... on Runs { results { runId } } } }"""


def _checks(port: int) -> dict[str, dict]:
    node = _graphql(port, CHECK_STATES)["data"]["assetNodeOrError"]
    return {c["name"]: c for c in node["assetChecksOrError"]["checks"]}


def _wait_run(port: int, run_id: str, seconds: float = 600) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        run = _graphql(port, RUN, {"id": run_id})["data"]["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") or time.monotonic() > deadline:
            return run
        time.sleep(2)


def _what_the_ui_shows(port: int, env: dict, home: str, docs: list[dict]) -> dict:
    """What the UI reads, through its GraphQL API, on the deployment processes: the audit's
    checks execute from the Checks tab one by one, a sensor run leaves them evaluated with the
    store-wide result carried, and it materializes only the shards it changed."""
    import datetime as dt

    from embedding_assets import settings
    from embedding_assets.defs.partitions import NUM_SHARDS
    from embedding_assets.dev.harness import collection
    from embedding_assets.lib.identity import doc_key
    from embedding_assets.lib.sharding import shard_key, shard_of
    from embedding_assets.metrics import StoreCollector

    checks = _checks(port)
    for name in AUDIT_CHECKS:  # the Checks tab's Execute is enabled
        assert checks[name]["canExecuteIndividually"] == "CAN_EXECUTE", checks[name]
    # Execute on one check, as the UI launches it
    launched = _graphql(
        port,
        EXECUTE,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": "embedding_assets",
                    "repositoryName": "__repository__",
                    "pipelineName": "__ASSET_JOB",
                    "assetSelection": [],
                    "assetCheckSelection": [
                        {"assetKey": {"path": ["feature_store_entries"]}, "name": "coverage"}
                    ],
                },
                "mode": "default",
                "runConfigData": {},
            }
        },
    )["data"]["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    executed = launched["run"]["runId"]
    assert _wait_run(port, executed)["status"] == "SUCCESS"
    coverage = _checks(port)["coverage"]["executionForLatestMaterialization"]
    assert coverage["runId"] == executed and coverage["status"] == "SUCCEEDED", coverage
    assert "covered, 0 missing" in coverage["evaluation"]["description"], coverage

    # an edit: the change sensor's run, under the daemon
    edited = docs[7]["doc_id"]
    earlier = {r["runId"] for r in _graphql(port, RUNS)["data"]["runsOrError"]["results"]}
    now = dt.datetime.now(dt.UTC)
    collection(env).update_one({"doc_id": edited}, {"$set": {"body": "Edited by hand.", "modified_at": now}})
    deadline, run_id = time.monotonic() + 300, None
    while run_id is None and time.monotonic() < deadline:
        for run in _graphql(port, RUNS)["data"]["runsOrError"]["results"]:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            if tags.get("embedding_assets/trigger") == "changes" and run["runId"] not in earlier:
                run_id = run["runId"]
        time.sleep(2)
    assert run_id is not None, "the change sensor launched no run"
    run = _wait_run(port, run_id)
    assert run["status"] == "SUCCESS", run
    # the runbook's Runs filters (docs/operations.md, EmbeddingNoSuccessfulRun): by status and by
    # the trigger tag, as the Runs page's filter bar asks for them
    found = _graphql(
        port,
        FILTERED_RUNS,
        {
            "filter": {
                "statuses": ["SUCCESS"],
                "tags": [{"key": "embedding_assets/trigger", "value": "changes"}],
            }
        },
    )["data"]["runsOrError"]["results"]
    assert run_id in {r["runId"] for r in found}, found
    shard = shard_key(shard_of(doc_key(edited), NUM_SHARDS), NUM_SHARDS)
    partitions = {m["partition"] for m in run["assetMaterializations"]}
    assert partitions == {shard}, partitions  # only the changed shard is materialized
    checks = _checks(port)
    for name in AUDIT_CHECKS:  # evaluated for the sensor run's materialization, never hidden
        latest = checks[name]["executionForLatestMaterialization"]
        assert latest is not None and latest["runId"] == run_id, (name, latest)
        assert latest["status"] == "SUCCEEDED", (name, latest)
        assert latest["evaluation"]["description"].startswith("this run's documents: "), latest
        assert "store-wide (" in latest["evaluation"]["description"], latest

    # edits in three scattered shards: a run per contiguous range (00, and 13 with 15 apart), so
    # shard 14, which nothing changed, gets no materialization, and each changed shard its own
    # figures, the runs' totals only as run_<name>
    by_shard: dict[int, str] = {}
    for d in docs:
        by_shard.setdefault(shard_of(doc_key(d["doc_id"]), NUM_SHARDS), d["doc_id"])
    picked = [0, 13, 15]
    assert set(picked) <= set(by_shard), sorted(by_shard)  # 160 documents fill every shard
    earlier = {r["runId"] for r in _graphql(port, RUNS)["data"]["runsOrError"]["results"]}
    now = dt.datetime.now(dt.UTC)
    for s in picked:
        collection(env).update_one(
            {"doc_id": by_shard[s]}, {"$set": {"body": f"Scattered {s}.", "modified_at": now}}
        )
    wanted = {shard_key(s, NUM_SHARDS) for s in picked}
    deadline, seen = time.monotonic() + 300, {}
    while set(seen) != wanted and time.monotonic() < deadline:
        for run in _graphql(port, RUNS)["data"]["runsOrError"]["results"]:
            if run["runId"] in earlier or run["status"] not in ("SUCCESS", "FAILURE"):
                continue
            found = _graphql(port, MATERIALIZED, {"id": run["runId"]})["data"]["runOrError"]
            for m in found["assetMaterializations"]:
                if m["assetKey"]["path"] == ["feature_store_entries"]:
                    entries = {e["label"]: e.get("intValue", e.get("text")) for e in m["metadataEntries"]}
                    seen[m["partition"]] = entries
        time.sleep(2)
    assert set(seen) == wanted, sorted(seen)  # shard 14 is not among them
    for figures in seen.values():
        assert figures["written"] == 1 and figures["rows"] > 0, figures
        assert "bytes_written" not in figures and "run_bytes_written" in figures, figures

    import redis

    def down() -> None:
        raise ConnectionRefusedError("down")

    with dg.DagsterInstance.from_config(home) as instance:
        collector = StoreCollector(
            settings.audit_dir(),
            instance=lambda: instance,
            probes={"redis": redis.Redis.from_url(env["REDIS_URL"]).ping, "code_server": down},
        )
        families = {f.name: f for f in collector.collect()}
        of_job = instance.get_runs_count(
            dg.RunsFilter(job_name="embed_documents", statuses=[dg.DagsterRunStatus.SUCCESS])
        )
    # what the alerts on the daemon and the sensors read, from the real daemon's records
    assert families["embedding_assets_daemon_heartbeat_age_seconds"].samples[0].value < 120
    ticks = {s.labels["sensor"]: s.value for s in families["embedding_assets_sensor_last_tick_ok"].samples}
    assert ticks["document_changes_sensor"] == 1, ticks
    at = families["embedding_assets_sensor_last_tick_timestamp_seconds"].samples
    assert any(s.labels["sensor"] == "document_changes_sensor" and time.time() - s.value < 120 for s in at)
    up = {s.labels["component"]: s.value for s in families["embedding_assets_up"].samples}
    assert up == {"redis": 1, "code_server": 0}
    runs = families["embedding_assets_runs"].samples
    return {"runs_success": sum(s.value for s in runs if s.labels["status"] == "success"), "of_job": of_job}


def _tails(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.iterdir()))


# -- what cannot run here (no Docker daemon, no Kubernetes) is checked against the code ------------
def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_compose_and_helm_values_name_real_settings_and_the_code_location():
    from embedding_assets import settings

    known = set(settings.SETTINGS) | {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER",
                                      "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}  # fmt: skip
    compose = _yaml(ROOT / "deploy" / "compose" / "compose.yaml")
    services = compose["services"]
    assert {"code", "webserver", "daemon", "postgres", "valkey", "mongo", "embedder"} <= set(services)
    env = services["code"]["environment"]
    assert set(env) <= known, set(env) - known
    assert "embedding_assets.definitions" in services["code"]["command"]
    for name in ("webserver", "daemon"):
        assert "workspace.yaml" in services[name]["command"]
    workspace = _yaml(ROOT / "deploy" / "compose" / "workspace.yaml")
    assert workspace["load_from"][0]["grpc_server"]["host"] == "code"

    values = _yaml(ROOT / "deploy" / "helm" / "values.yaml")
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "embedding_assets.definitions"]
    names = {e["name"] for e in deployment["env"]}
    assert names <= known, names - known
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] > 0
    assert "pools" not in values["concurrency"]  # dagster-io/dagster#33552
    # sensors tick in threads there as in deploy/dagster.yaml
    instance = _yaml(ROOT / "deploy" / "dagster.yaml")
    assert values["dagsterDaemon"]["sensors"] == {
        "useThreads": instance["sensors"]["use_threads"],
        "numWorkers": instance["sensors"]["num_workers"],
    }


def test_the_image_pins_torch_before_the_project_and_serves_the_code_location():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    torch_at = text.index('pip install "torch==${TORCH_VERSION}"')
    assert torch_at < text.index("pip install . ")
    assert "ARG TORCH_VERSION=2.13.0" in text
    assert '"embedding_assets.definitions"' in text.splitlines()[-1]


def test_every_instance_config_leaves_deletions_a_place_in_the_run_queue(tmp_path):
    """Change and repair runs execute at most as many at once as their sensor allows, in every
    instance config (local, dev, deployment, Helm), and Dagster accepts each config."""
    import yaml

    from embedding_assets.defs.sensors import MAX_DELTA_RUNS_IN_FLIGHT
    from embedding_assets.deployment import LOCAL_INSTANCE_YAML

    expected = [
        {"key": "embedding_assets/trigger", "value": kind, "limit": MAX_DELTA_RUNS_IN_FLIGHT}
        for kind in ("changes", "repair")
    ]
    texts = {
        "dagster.yaml": (ROOT / "dagster.yaml").read_text(),
        "dev": LOCAL_INSTANCE_YAML,
        "deploy": (ROOT / "deploy" / "dagster.yaml").read_text(),
    }
    for name, text in texts.items():
        config = yaml.safe_load(text)
        limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
        assert limits == expected, name
        assert config["concurrency"]["runs"]["max_concurrent_runs"] > MAX_DELTA_RUNS_IN_FLIGHT, name
        if name != "deploy":  # the deployment's needs PostgreSQL; its storage is tested above
            home = tmp_path / name
            home.mkdir()
            (home / "dagster.yaml").write_text(text)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits == expected
    values = _yaml(ROOT / "deploy" / "helm" / "values.yaml")
    assert values["concurrency"]["runs"]["tagConcurrencyLimits"] == expected
