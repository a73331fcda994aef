"""The source server's memory under the soak's writes, with and without the pipeline reading it.

    python -m benchmarks.source_memory --minutes 20 --rate 5

The soak saw SecantusDB (the MongoDB stand-in) grow while every process of the deployment stayed
flat. This asks whose growth it is: two SecantusDB servers, started as the soak starts its own
(256 MB cache, 15-minute oplog), each loaded with the same 2,000 documents and given the same
churn of edits, inserts and deletes at ``--rate`` per second. The first gets nothing else (the
baseline); the second is also read as the deployment reads it: every 5 s the change sensor's
query and a change stream opened from the last resume token and closed. Prints each server's RSS
over time and its slope after a warm-up; the second's slope over the first's is the pipeline's
share.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pymongo

from benchmarks.soak import SOURCE_OPTIONS as OPTIONS
from benchmarks.soak import slope_mb_per_hour
from embedding_assets.dev import corpus
from embedding_assets.dev.servers import SecantusProcess


def serve(name: str, args: argparse.Namespace, read_as_pipeline: bool, out: dict) -> None:
    server = SecantusProcess(Path(tempfile.mkdtemp(prefix=f"ea-source-{name}-")), options=OPTIONS)
    server.start()
    client = pymongo.MongoClient(server.uri, tz_aware=True)
    collection = client["ea"]["documents"]
    collection.insert_many([dict(d) for d in corpus.generate_documents(args.docs)])
    collection.create_index("doc_id")
    collection.create_index([("modified_at", 1), ("doc_id", 1)])
    rng = random.Random(args.seed)  # the same churn on both servers
    live = [d["doc_id"] for d in collection.find({}, {"doc_id": 1})]
    process = psutil.Process(server.process.pid)
    series: list[tuple[float, float]] = []
    token, last_read, counter = None, 0.0, 0
    started = time.time()
    next_at = started
    try:
        while time.time() - started < args.minutes * 60:
            now = dt.datetime.now(dt.UTC)
            roll = rng.random()
            if roll < 0.7:
                collection.update_one(
                    {"doc_id": rng.choice(live)},
                    {"$set": {"body": f"Edited {counter} " * rng.randint(5, 80), "modified_at": now}},
                )
            elif roll < 0.85:
                counter += 1
                doc_id = f"soak-{name}-{counter}"
                collection.insert_one(
                    {"doc_id": doc_id, "title": "t", "body": "New " * 40, "modified_at": now}
                )
                live.append(doc_id)
            else:
                collection.delete_one({"doc_id": live.pop(rng.randrange(len(live)))})
            if read_as_pipeline and time.time() - last_read >= 5:
                last_read = time.time()
                since = now - dt.timedelta(seconds=30)
                list(
                    collection.find({"modified_at": {"$gt": since}}).sort([("modified_at", 1), ("doc_id", 1)])
                )
                with collection.watch(
                    [{"$match": {"operationType": "delete"}}], resume_after=token, max_await_time_ms=200
                ) as stream:
                    while stream.try_next() is not None:
                        pass
                    token = stream.resume_token
            if not series or time.time() - series[-1][0] >= 30:
                series.append((time.time(), process.memory_info().rss / 2**20))
            next_at += 1.0 / args.rate
            time.sleep(max(0.0, next_at - time.time()))
    finally:
        client.close()
        server.stop()
    steady = [(t - started, mb) for t, mb in series if t - started >= args.warm_up * 60]
    out[name] = (series, slope_mb_per_hour(steady) if len(steady) >= 3 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=5.0, help="writes per second")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--warm-up", type=float, default=5.0, help="minutes left out of the slope")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    out: dict = {}
    threads = [
        threading.Thread(target=serve, args=("writes", args, False, out)),
        threading.Thread(target=serve, args=("writes+pipeline reads", args, True, out)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"SecantusDB RSS under {args.rate:g} writes/s for {args.minutes:g} min ({' '.join(OPTIONS)})")
    print("| server | RSS first (MB) | RSS last (MB) | slope after warm-up (MB/h) |")
    print("| --- | --- | --- | --- |")
    for name, (series, slope) in out.items():
        print(f"| {name} | {series[0][1]:.0f} | {series[-1][1]:.0f} | {slope:+.1f} |")
    base, read = out["writes"][1], out["writes+pipeline reads"][1]
    print(
        f"pipeline reads' share: {read - base:+.1f} MB/h ({read / base:.2f}x the writes alone)"
        if base
        else ""
    )
    for name, (series, _) in out.items():
        print(f"{name}: {[round(mb) for _, mb in series]}")


if __name__ == "__main__":
    main()
