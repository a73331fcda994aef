"""Change-to-store latency under ``dagster dev``: how long an edit or a hard delete takes to reach Redis.

    python -m benchmarks.latency                       # 50 edits over every shard, 3 bursts
    python -m benchmarks.latency --changes 50 --bursts 5 --docs 800
    python -m benchmarks.latency --changes 5 --deletes 2 --bursts 10 --backend static \
        --beside ".venv/bin/python -m pytest -q -n 2 -m 'not slow' -p no:cacheprovider"

A corpus is loaded and backfilled (in this process), then ``dagster dev`` (webserver and daemon,
SQLite instance) runs the code location with its sensors on. Each burst edits N documents spread
over every shard at one instant; the time from an edit's write to the moment its new version is
readable through ``EmbeddingClient`` is its latency; with ``--deletes``, the same burst also deletes
documents, and a delete has arrived when the client reads no entry. ``--beside`` runs a command
(the test suite, say) for the length of the bursts. Prints p50, p95 and max, the runs launched,
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

SENSORS = ("document_changes_sensor", "document_deletions_sensor")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--deletes", type=int, default=0, help="hard deletes in each burst, beside the edits")
    parser.add_argument("--beside", default="", help="a shell command run during the bursts (a load)")
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
    from embedding_assets.deployment import LOCAL_INSTANCE_YAML
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

    deleted: set[str] = set()

    def burst(round_: int, deletes: int = 0) -> tuple[dict[str, float], float, dict[str, float]]:
        """Edits spread round-robin over every shard, and ``deletes`` hard deletes taken from the
        other end of each shard's documents, at one instant; returns edit and delete times."""
        chosen = [
            by_shard[s][(round_ * args.changes + i) % len(by_shard[s])]
            for i, s in _spread(by_shard, args.changes)
        ]
        gone = [
            d
            for i, s in _spread(by_shard, args.docs // 2)
            if (d := by_shard[s][-1 - i % len(by_shard[s])]) not in chosen and d not in deleted
        ][:deletes]
        edited_at = dt.datetime.now(dt.UTC)
        for doc_id in chosen:
            coll.update_one(
                {"doc_id": doc_id},
                {"$set": {"body": f"Burst {round_} edit of {doc_id}.", "modified_at": edited_at}},
            )
        edits = {d: time.time() for d in chosen}
        for doc_id in gone:
            coll.delete_one({"doc_id": doc_id})
            deleted.add(doc_id)
        return edits, edited_at.timestamp(), {d: time.time() for d in gone}

    def arrivals(
        written: dict[str, float], edited_at: float, removed: dict[str, float] | None = None
    ) -> tuple[list[float], list[float]]:
        """Seconds from each edit's write until its new entry is readable, and from each delete
        until no entry is; polls every 100 ms."""
        waiting, going = dict(written), dict(removed or {})
        out: list[float] = []
        gone: list[float] = []
        deadline = time.time() + args.timeout
        while (waiting or going) and time.time() < deadline:
            docs = list(waiting) + list(going)
            for doc_id, entry in zip(docs, client.get_many(docs), strict=True):
                if doc_id in waiting and entry is not None and entry.source_ms >= int(edited_at * 1000):
                    out.append(time.time() - waiting.pop(doc_id))
                elif doc_id in going and entry is None:
                    gone.append(time.time() - going.pop(doc_id))
            time.sleep(0.1)
        if waiting or going:
            raise SystemExit(
                f"{len(waiting)} edits and {len(going)} deletes never reached Redis "
                f"within {args.timeout:.0f} s"
            )
        return out, gone

    # baseline: the same burst run at once in this process, as one delta run
    written, edited_at, _ = burst(0)
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
    load = None
    try:
        _wait_for_cursor(Path(os.environ["DAGSTER_HOME"]), timeout=180)
        print(f"dagster dev up on port {port}; the sensors have their cursors", flush=True)
        if args.beside:
            load = subprocess.Popen(
                args.beside, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            print(f"running beside: {args.beside}", flush=True)
        latencies: list[float] = []
        deletions: list[float] = []
        bursts: list[tuple[float, float]] = []
        for round_ in range(1, args.bursts + 1):
            written, edited_at, removed = burst(round_, args.deletes)
            got, gone = arrivals(written, edited_at, removed)
            latencies += got
            deletions += gone
            slowest = max(got + gone)
            bursts.append((edited_at, min(written.values()) + slowest))  # its first write, its last arrival
            print(f"burst {round_}: {len(got)} edits, {len(gone)} deletes, slowest {slowest:.1f} s")
            sys.stdout.flush()
            time.sleep(2)
        beside_ran = load is not None and load.poll() is None
        runs = _runs(Path(os.environ["DAGSTER_HOME"]))
        phases = _phases(Path(os.environ["DAGSTER_HOME"]))
        timelines = _timelines(Path(os.environ["DAGSTER_HOME"]), bursts)
    finally:
        if load is not None and load.poll() is None:
            stop_groups(load)
        stop_groups(proc)
    print()
    print(
        f"change-to-store latency under dagster dev: {len(latencies)} edits and {len(deletions)} deletes, "
        f"{args.bursts} bursts of {args.changes} + {args.deletes}"
        + (f", beside `{args.beside}`" + ("" if beside_ran else " (it ended before the last burst)"))
        * bool(args.beside)
    )
    for name, values in (("edits", latencies), ("deletes", deletions), ("all", latencies + deletions)):
        if len(values) >= 2:
            p95 = statistics.quantiles(values, n=20)[-1]
            print(
                f"  {name:<8} p50 {statistics.median(values):5.1f} s   p95 {p95:5.1f} s   "
                f"max {max(values):5.1f} s   goal p95 <= {30 if args.beside else 15} s "
                + ("(beside a load, issue 28)" if args.beside else "(quiet machine, issue 29)")
            )
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"  delta runs launched by the sensors: {runs}")
    print(
        f"  baseline, the edit burst run in process: {direct:.1f} s; "
        f"edits p95 / baseline = {p95 / direct:.1f}x"
    )
    print("  where a sensor run's time goes (median s over its runs):")
    for name, values in phases.items():
        print(f"    {name:<40} {statistics.median(values):6.1f}   (max {max(values):.1f})")
    print("  each burst's runs, seconds after its first write (created by a tick, launched, process up,")
    print("  entries published, run done), and the burst's last arrival:")
    for i, (lines, last) in enumerate(timelines, 1):
        print(f"    burst {i}: last arrival {last:5.1f}")
        for line in lines:
            print(f"      {line}")


def _spread(by_shard: dict[int, list[str]], n: int) -> list[tuple[int, int]]:
    """``(i, shard)`` pairs taking shards round-robin, so every shard gets a share of n edits."""
    shards = sorted(by_shard)
    return [(i // len(shards), shards[i % len(shards)]) for i in range(n)]


def _wait_for_cursor(home: Path, timeout: float) -> None:
    import dagster as dg

    deadline = time.time() + timeout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while time.time() < deadline:
            started = {
                s.name for s in instance.all_instigator_state() if getattr(s.instigator_data, "cursor", None)
            }
            if set(SENSORS) <= started:
                return
            time.sleep(1)
    raise SystemExit(f"the sensors did not tick within {timeout:.0f} s (see dagster-dev.log)")


def _runs(home: Path) -> dict[str, int]:
    """Runs launched by each sensor (its trigger tag)."""
    import dagster as dg

    out: dict[str, int] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs():
            trigger = run.tags.get("embedding_assets/trigger")
            if trigger in ("changes", "deletions", "repair"):
                out[trigger] = out.get(trigger, 0) + 1
    return out


def _phases(home: Path) -> dict[str, list[float]]:
    """Per sensor run: waiting in the queue, the run process starting (imports, code load), each
    step, and the whole run; from the run's own event log."""
    import dagster as dg
    from dagster import DagsterEventType as E

    out: dict[str, list[float]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records():
            trigger = record.dagster_run.tags.get("embedding_assets/trigger")
            if trigger not in ("changes", "deletions"):
                continue
            at, steps = _moments(instance, record.dagster_run.run_id)
            for step, took in steps.items():
                out.setdefault(f"{trigger}: step {step}", []).append(took)
            created = record.create_timestamp.timestamp()
            starting, start, success = (at.get(t.value) for t in (E.RUN_STARTING, E.RUN_START, E.RUN_SUCCESS))
            if starting:
                out.setdefault(f"{trigger}: queued (created -> launch)", []).append(starting - created)
            if starting and start:
                out.setdefault(f"{trigger}: process start -> RUN_START", []).append(start - starting)
            if start and success:
                out.setdefault(f"{trigger}: RUN_START -> RUN_SUCCESS", []).append(success - start)
            if success:
                out.setdefault(f"{trigger}: created -> RUN_SUCCESS", []).append(success - created)
    return dict(sorted(out.items()))


def _moments(instance: object, run_id: str) -> tuple[dict[str, float], dict[str, float]]:
    """A run's first moment of each event kind (``published``: ``feature_store_entries`` done), and
    each step's seconds from its start to its success."""
    from dagster import DagsterEventType as E

    at: dict[str, float] = {}
    started: dict[str, float] = {}
    steps: dict[str, float] = {}
    for entry in instance.all_logs(run_id):  # type: ignore[attr-defined]
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        at.setdefault(kind, entry.timestamp)
        if kind == E.STEP_START.value:
            started[event.step_key] = entry.timestamp
        elif kind == E.STEP_SUCCESS.value and event.step_key in started:
            steps[event.step_key] = entry.timestamp - started[event.step_key]
            if event.step_key == "feature_store_entries":
                at.setdefault("published", entry.timestamp)
    return at, steps


def _timelines(home: Path, bursts: list[tuple[float, float]]) -> list[tuple[list[str], float]]:
    """Per burst, the sensor runs created between its first write and its last arrival, each as
    its moments after that write: which part of the latency is the tick's wait and which the run's."""
    import dagster as dg
    from dagster import DagsterEventType as E

    out: list[tuple[list[str], float]] = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        for first, last in bursts:
            lines = []
            for record in sorted(records, key=lambda r: r.create_timestamp):
                created = record.create_timestamp.timestamp()
                trigger = record.dagster_run.tags.get("embedding_assets/trigger")
                if trigger not in ("changes", "deletions") or not first <= created <= last:
                    continue
                at, _ = _moments(instance, record.dagster_run.run_id)

                def moment(kind: str, at: dict[str, float] = at, first: float = first) -> str:
                    return f"{at[kind] - first:5.1f}" if kind in at else "    -"

                lines.append(
                    f"{trigger:<9} {record.dagster_run.tags.get('embedding_assets/documents', '?'):>3} docs: "
                    f"created {created - first:5.1f}  launched {moment(E.RUN_STARTING.value)}  "
                    f"up {moment(E.RUN_START.value)}  published {moment('published')}  "
                    f"done {moment(E.RUN_SUCCESS.value)}"
                )
            out.append((lines, last - first))
    return out


if __name__ == "__main__":
    main()
