"""Re-ranking latency on a store of N entries: ``rerank`` of 100 candidates, without the query
encode, against ``get_many`` of the same 100 ids (its floor) in the same process.

    python -m benchmarks.rerank --docs 1000000

Entries are synthetic int8 x 384 unit vectors written through the real publish path (as
benchmarks.storage writes them) into an embedded valkey, or REDIS_URL's server (its database is
flushed). Queries are QueryVectors of the stored version (what ``embed_query`` returns).
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from benchmarks.storage import redis_server, write_entries
from embedding_assets.client import EmbeddingClient, QueryVector
from embedding_assets.stores.feature_store import connect


def timed(calls: int, fn: object) -> np.ndarray:
    out = []
    for i in range(calls):
        started = time.perf_counter()
        fn(i)  # type: ignore[operator]
        out.append(time.perf_counter() - started)
    return np.asarray(out) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    with redis_server("ea-rerank-") as url:
        started = time.perf_counter()
        store, spec, _ = write_entries(connect(url), "int8", args.docs)
        print(
            f"{args.docs} entries (int8 x {spec.dimension}) written in {time.perf_counter() - started:.0f} s"
        )
        client = EmbeddingClient(store)
        rng = random.Random(5)
        batches = [
            [f"doc-{rng.randrange(args.docs):07d}" for _ in range(args.candidates)] for _ in range(args.calls)
        ]
        vectors = np.random.default_rng(5).normal(size=(args.calls, spec.dimension)).astype(np.float32)
        queries = [QueryVector(v / np.linalg.norm(v), client.version) for v in vectors]
        scores = [list(np.random.default_rng(i).random(args.candidates)) for i in range(args.calls)]
        for i in range(min(100, args.calls)):  # warm up the connection and the scripts
            client.rerank(queries[i], batches[i])
        floor = timed(args.calls, lambda i: client.get_many(batches[i]))
        results = {
            "get_many (the floor)": floor,
            "rerank cosine": timed(args.calls, lambda i: client.rerank(queries[i], batches[i])),
            "rerank rrf, first-stage scores": timed(
                args.calls,
                lambda i: client.rerank(queries[i], batches[i], first_stage_scores=scores[i], fusion="rrf"),
            ),
            "rerank linear, first-stage scores": timed(
                args.calls,
                lambda i: client.rerank(
                    queries[i], batches[i], first_stage_scores=scores[i], fusion="linear"
                ),
            ),
        }
        print(f"\n{args.candidates} candidates of {args.docs} entries, {args.calls} calls each, loopback:")
        for label, ms in results.items():
            p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
            ratio = p50 / np.percentile(floor, 50)
            print(f"{label:<36} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  p50 / get_many {ratio:.2f}x")
        print("goal: rerank of 100 candidates p99 <= 3 ms without the query encode")


if __name__ == "__main__":
    main()
