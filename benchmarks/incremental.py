"""Full pass, 1%-changed pass and no-change pass on N documents, on real servers.

    python -m benchmarks.incremental --docs 100000 --backend static

Servers come from MONGO_URI / REDIS_URL, or are embedded. Prints one table row per pass:
documents embedded, entries written and wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--backend", default="static", choices=["static", "transformer"])
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of documents edited")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="ea-bench-"))
    os.environ.update(
        {
            "EA_BACKEND": args.backend,
            "EA_PARQUET_DIR": str(state / "parquet"),
            "MONGO_DB": "ea_bench",
            "HF_HUB_OFFLINE": "1",
            "EA_STATIC_DIR": os.environ.get("EA_STATIC_DIR", str(Path(".state/models").resolve())),
        }
    )
    from embedding_assets.lib.servers import EmbeddedServers

    with EmbeddedServers(state) as servers:
        os.environ.update(servers.env)
        run(args, servers)


def run(args: argparse.Namespace, servers: object) -> None:
    import pymongo
    import redis

    from embedding_assets.defs.sensors import document_changes_sensor
    from embedding_assets.lib import corpus
    from embedding_assets_tests.runs import Daemon, metadata
    from embedding_assets_tests.test_incremental import sweep_request

    coll = pymongo.MongoClient(servers.mongo_uri, tz_aware=True)["ea_bench"]["documents"]  # type: ignore[attr-defined]
    coll.drop()
    redis.Redis.from_url(servers.redis_url).flushdb()  # type: ignore[attr-defined]
    t = time.perf_counter()
    docs = list(corpus.generate_documents(args.docs, mean_sentences=20))
    for start in range(0, len(docs), 10_000):
        coll.insert_many(docs[start : start + 10_000], ordered=False)
    coll.create_index("doc_id")
    coll.create_index([("modified_at", 1), ("doc_id", 1)])
    words = sum(len(d["body"].split()) for d in docs) / len(docs)
    print(f"loaded {len(docs)} documents (mean {words:.0f} words) in {time.perf_counter() - t:.1f} s")

    daemon = Daemon()
    rows = []

    def full_pass(label: str) -> None:
        t = time.perf_counter()
        daemon.run([sweep_request()])
        wall = time.perf_counter() - t
        r = daemon.results[-1]
        rows.append(
            (
                label,
                metadata(r, "document_vectors")["embedded"],
                metadata(r, "feature_store_entries")["written"],
                wall,
            )
        )

    full_pass("full pass (empty store)")
    daemon.tick(document_changes_sensor)  # the sensor starts at the newest document

    changed = random.Random(1).sample([d["doc_id"] for d in docs], int(len(docs) * args.changed))
    when = dt.datetime.now(dt.UTC)
    for i, doc_id in enumerate(changed):
        coll.update_one(
            {"doc_id": doc_id},
            {"$set": {"body": f"Edited body {i}.", "modified_at": when + dt.timedelta(milliseconds=i)}},
        )
    t = time.perf_counter()
    before = len(daemon.results)
    daemon.sync(document_changes_sensor)
    wall = time.perf_counter() - t
    runs = daemon.results[before:]
    rows.append(
        (
            f"{args.changed:.0%} changed, sensor delta runs ({len(runs)} runs)",
            sum(metadata(r, "document_vectors")["embedded"] for r in runs),
            sum(metadata(r, "feature_store_entries")["written"] for r in runs),
            wall,
        )
    )
    for i, doc_id in enumerate(changed):
        coll.update_one(
            {"doc_id": doc_id},
            {
                "$set": {
                    "body": f"Edited again {i}.",
                    "modified_at": when + dt.timedelta(seconds=10, milliseconds=i),
                }
            },
        )
    full_pass(f"{args.changed:.0%} changed, full sweep")
    full_pass("nothing changed, full sweep")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n{args.docs} documents, backend {args.backend}, {os.cpu_count()} cores; peak RSS {peak_mb:.0f} MB"
    )
    print(f"{'pass':<45} {'embedded':>9} {'written':>9} {'wall s':>8} {'docs/s':>9}")
    for label, embedded, written, wall in rows:
        print(f"{label:<45} {embedded:>9} {written:>9} {wall:>8.1f} {args.docs / wall:>9.0f}")


if __name__ == "__main__":
    main()
