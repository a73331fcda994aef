"""Change-to-store latency under ``dagster dev``: how long an edited document takes to reach Redis.

    python -m benchmarks.latency                       # 50 edits over every shard, 3 bursts
    python -m benchmarks.latency --changes 50 --bursts 5 --docs 800

A corpus is loaded and backfilled (in this process), then ``dagster dev`` (webserver and daemon,
SQLite instance) runs the code location with its sensors on. Each burst edits N documents spread
over every shard at one instant; the time from an edit's write to the moment its new version is
readable through ``EmbeddingClient`` is its latency. Prints p50, p95 and max, the runs launched,
and the baseline: the same kind of burst run directly in this process (no daemon, no run
launch), i.e. the pipeline's own work, against which the orchestration overhead is the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENSOR = "document_changes_sensor"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--backend", default="transformer", choices=["transformer", "static"])
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one burst")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="ea-latency-"))
    os.environ.update(
        {
            "EA_BACKEND": args.backend,
            "EA_STATE_DIR": str(state),
            "EA_PARQUET_DIR": str(state / "parquet"),
            "MONGO_DB": "ea_latency",
            "HF_HUB_OFFLINE": "1",
            "DAGSTER_HOME": str(state / "dagster_home"),
        }
    )
    from embedding_assets.cli import LOCAL_INSTANCE_YAML
    from embedding_assets.dev.servers import EmbeddedServers

    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE_YAML)
    with EmbeddedServers(state) as servers:
        os.environ.update(servers.env)
        run(args, state)


def run(args: argparse.Namespace, state: Path) -> None:
    import pymongo

    from embedding_assets.client import EmbeddingClient
    from embedding_assets.defs.partitions import NUM_SHARDS
    from embedding_assets.defs.sensors import delta_run_requests
    from embedding_assets.dev import corpus
    from embedding_assets.dev.harness import Daemon, sweep_request
    from embedding_assets.dev.servers import free_port, stop_groups
    from embedding_assets.lib.sharding import shard_of

    coll = pymongo.MongoClient(os.environ["MONGO_URI"], tz_aware=True)["ea_latency"]["documents"]
    coll.drop()
    coll.insert_many(list(corpus.generate_documents(args.docs)))
    coll.create_index([("modified_at", 1), ("doc_id", 1)])
    ids = [f"doc-{i:06d}" for i in range(args.docs)]
    by_shard: dict[int, list[str]] = {}
    for doc_id in ids:
        by_shard.setdefault(shard_of(doc_id, NUM_SHARDS), []).append(doc_id)
    t = time.perf_counter()
    daemon = Daemon()
    daemon.run([sweep_request()])
    assert daemon.results[-1].success
    print(f"{args.docs} documents backfilled in {time.perf_counter() - t:.1f} s ({args.backend})", flush=True)
    client = EmbeddingClient.from_url(os.environ["REDIS_URL"])

    def burst(round_: int) -> tuple[dict[str, float], float]:
        """Edits spread round-robin over every shard, at one instant; returns edit times."""
        chosen = [
            by_shard[s][(round_ * args.changes + i) % len(by_shard[s])]
            for i, s in _spread(by_shard, args.changes)
        ]
        edited_at = dt.datetime.now(dt.UTC)
        for doc_id in chosen:
            coll.update_one(
                {"doc_id": doc_id},
                {"$set": {"body": f"Burst {round_} edit of {doc_id}.", "modified_at": edited_at}},
            )
        return {d: time.time() for d in chosen}, edited_at.timestamp()

    def arrivals(written: dict[str, float], edited_at: float) -> list[float]:
        """Seconds from each edit's write until its new entry is readable; polls every 100 ms."""
        waiting = dict(written)
        out: list[float] = []
        deadline = time.time() + args.timeout
        while waiting and time.time() < deadline:
            docs = list(waiting)
            for doc_id, entry in zip(docs, client.get_many(docs), strict=True):
                if entry is not None and entry.source_ms >= int(edited_at * 1000):
                    out.append(time.time() - waiting.pop(doc_id))
            time.sleep(0.1)
        if waiting:
            raise SystemExit(f"{len(waiting)} edits never reached Redis within {args.timeout:.0f} s")
        return out

    # baseline: the same burst run at once in this process, as one delta run
    written, edited_at = burst(0)
    t = time.perf_counter()
    daemon.run(delta_run_requests("changes", "baseline", list(written)))
    direct = time.perf_counter() - t
    arrivals(written, edited_at)
    print(f"baseline: one delta run of {len(written)} changes, in process: {direct:.1f} s", flush=True)

    port = free_port()
    log = open(state / "dagster-dev.log", "w")  # noqa: SIM115 - open for the process's lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-m", "embedding_assets.definitions", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,  # its webserver and daemon are stopped with it
    )
    try:
        _wait_for_cursor(Path(os.environ["DAGSTER_HOME"]), timeout=180)
        print(f"dagster dev up on port {port}; the change sensor has its cursor", flush=True)
        latencies: list[float] = []
        for round_ in range(1, args.bursts + 1):
            written, edited_at = burst(round_)
            got = arrivals(written, edited_at)
            latencies += got
            print(f"burst {round_}: {len(got)} edits, slowest {max(got):.1f} s", flush=True)
            time.sleep(2)
        runs = _runs(Path(os.environ["DAGSTER_HOME"]))
        phases = _phases(Path(os.environ["DAGSTER_HOME"]))
    finally:
        stop_groups(proc)
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print()
    print(
        f"change-to-store latency under dagster dev: {len(latencies)} edits, "
        f"{args.bursts} bursts of {args.changes}"
    )
    print(f"  p50 {p50:.1f} s   p95 {p95:.1f} s   max {max(latencies):.1f} s   goal p95 <= 60 s")
    print(f"  delta runs launched by the sensor: {runs}  ({runs / args.bursts:.1f} per burst)")
    print(f"  baseline, the same burst run in process: {direct:.1f} s; p95 / baseline = {p95 / direct:.1f}x")
    print("  where a sensor run's time goes (median s over its runs):")
    for name, values in phases.items():
        print(f"    {name:<28} {statistics.median(values):6.1f}   (max {max(values):.1f})")


def _spread(by_shard: dict[int, list[str]], n: int) -> list[tuple[int, int]]:
    """``(i, shard)`` pairs taking shards round-robin, so every shard gets a share of n edits."""
    shards = sorted(by_shard)
    return [(i // len(shards), shards[i % len(shards)]) for i in range(n)]


def _wait_for_cursor(home: Path, timeout: float) -> None:
    import dagster as dg

    deadline = time.time() + timeout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while time.time() < deadline:
            for s in instance.all_instigator_state():
                if s.name == SENSOR and s.instigator_data is not None and s.instigator_data.cursor:
                    return
            time.sleep(1)
    raise SystemExit(f"the change sensor did not tick within {timeout:.0f} s (see dagster-dev.log)")


def _runs(home: Path) -> int:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return sum(1 for r in instance.get_runs() if r.tags.get("embedding_assets/trigger") == "changes")


def _phases(home: Path) -> dict[str, list[float]]:
    """Per sensor run: waiting in the queue, the run process starting (imports, code load), each
    step, and the whole run; from the run's own event log."""
    import dagster as dg
    from dagster import DagsterEventType as E

    out: dict[str, list[float]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records(dg.RunsFilter(tags={"embedding_assets/trigger": "changes"})):
            at: dict[str, float] = {}
            steps: dict[str, float] = {}
            for entry in instance.all_logs(record.dagster_run.run_id):
                event = entry.dagster_event
                if event is None:
                    continue
                kind = event.event_type_value
                at.setdefault(kind, entry.timestamp)
                if kind == E.STEP_START.value:
                    steps[event.step_key] = entry.timestamp
                elif kind == E.STEP_SUCCESS.value and event.step_key in steps:
                    took = entry.timestamp - steps[event.step_key]
                    out.setdefault(f"step {event.step_key}", []).append(took)
            created = record.create_timestamp.timestamp()
            starting, start, success = (
                at.get(t.value) for t in (E.RUN_STARTING, E.RUN_START, E.RUN_SUCCESS)
            )
            if starting:
                out.setdefault("queued (created -> launch)", []).append(starting - created)
            if starting and start:
                out.setdefault("process start -> RUN_START", []).append(start - starting)
            if start and success:
                out.setdefault("RUN_START -> RUN_SUCCESS", []).append(success - start)
            if success:
                out.setdefault("created -> RUN_SUCCESS", []).append(success - created)
    return dict(sorted(out.items()))


if __name__ == "__main__":
    main()
