"""Redis memory per document for each codec, measured with INFO memory.

    python -m benchmarks.storage --docs 100000
    python -m benchmarks.storage --docs 100000 --cluster     # also on a 3-master Valkey cluster

Writes N synthetic unit vectors (384 dimensions) through the real publish path (codec, bucket
TTL, conditional Lua writes) into an embedded valkey, or REDIS_URL's server (its database is
flushed), and prints the keys' used_memory / documents (measured by flushing them). With
``--cluster``, the same on a three-master Valkey cluster formed here (dev/cluster.py), whose
keys carry hash tags: the ratio to the single server is what the tags and slots cost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import redis

from embedding_assets.dev.cluster import ValkeyCluster
from embedding_assets.dev.servers import ValkeyProcess
from embedding_assets.lib import publish
from embedding_assets.lib.frames import TS
from embedding_assets.lib.quantization import QUANTIZATIONS
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.stores.feature_store import FeatureStore, connect
from embedding_assets.stores.redis_entries import servers


def measure(
    url: str, quantization: str, n: int, dimension: int = 384, db: int | None = None
) -> tuple[float, float, str]:
    """(bytes/doc, writes/s, server version) of n entries of one codec, in a flushed database."""
    client = redis.Redis.from_url(url, db=db) if db is not None else connect(url)
    _, _, seconds = write_entries(client, quantization, n, dimension)
    version = servers(client)[0].info("server")["redis_version"]
    return flushed_bytes(client) / n, n / seconds, version


def write_entries(
    client: redis.Redis, quantization: str, n: int, dimension: int = 384
) -> tuple[FeatureStore, EmbeddingSpec, float]:
    """n synthetic unit vectors ``doc-0000000 ...`` through the real publish path, into a flushed
    database, as the active version; returns the store, the spec and the seconds writing took."""
    client.flushdb()
    store = FeatureStore(client)
    store.compact_encoding()
    spec = EmbeddingSpec(
        "all-minilm-l6-v2", "bench", dimension, 254, 32, 2, 200_000, "t1", "fp32", quantization
    )
    store.control.register_version(spec)
    rng = np.random.default_rng(0)
    seconds = 0.0
    calibration = None
    for start in range(0, n, 100_000):  # in slices: a million float vectors need not be in memory
        size = min(100_000, n - start)
        vectors = rng.normal(size=(size, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        frame = pl.DataFrame(
            {
                "doc_id": [f"doc-{i:07d}" for i in range(start, start + size)],
                "modified_at": pl.Series(np.full(size, 1_780_000_000_000)).cast(TS),
                "content_hash": pl.Series(np.arange(start, start + size, dtype=np.uint64)),
                "vector": pl.Series(vectors, dtype=pl.Array(pl.Float32, dimension)),
            }
        )
        started = time.perf_counter()
        calibration = calibration or store.calibration_for(spec, [frame])
        publish.publish(store.entries, spec, frame, calibration, now=int(time.time()), max_age_seconds=3600)
        seconds += time.perf_counter() - started
    store.control.activate_if_none(spec.tag)
    return store, spec, seconds


def flushed_bytes(client: redis.Redis) -> int:
    """What the database's keys take: used_memory before and after a synchronous FLUSHDB.

    A delta around the writes would also count whatever the server's buffers and Lua state
    happen to hold at either moment (at 1M documents once even negative).
    """
    nodes = servers(client)  # the server, or every master of a cluster
    full = sum(int(n.info("memory")["used_memory"]) for n in nodes)
    for n in nodes:
        n.execute_command("FLUSHDB", "SYNC")  # plain FLUSHDB may free lazily (Valkey 8+ default)
    return full - sum(int(n.info("memory")["used_memory"]) for n in nodes)


@contextlib.contextmanager
def redis_server(prefix: str) -> Iterator[str]:
    """REDIS_URL, or an embedded valkey started for the benchmark and stopped after it."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = ValkeyProcess(Path(tempfile.mkdtemp(prefix=prefix)))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--cluster", action="store_true", help="also on a 3-master Valkey cluster")
    args = parser.parse_args()
    with redis_server("ea-storage-") as url:
        print(f"{'codec':<8} {'documents':>10} {'bytes/doc':>10} {'writes/s':>10}  server")
        single = {}
        for quantization in QUANTIZATIONS:
            per_doc, rate, version = measure(url, quantization, args.docs)
            single[quantization] = (per_doc, rate)
            print(
                f"{quantization:<8} {args.docs:>10} {per_doc:>10.0f} {rate:>10.0f}  redis_version {version}"
            )
        if args.cluster:
            with ValkeyCluster(Path(tempfile.mkdtemp(prefix="ea-cluster-"))) as cluster:
                for quantization in QUANTIZATIONS:
                    per_doc, rate, version = measure(cluster.url, quantization, args.docs)
                    base_bytes, base_rate = single[quantization]
                    print(
                        f"{quantization:<8} {args.docs:>10} {per_doc:>10.0f} {rate:>10.0f}  "
                        f"3-master cluster {version}: {per_doc / base_bytes:.2f}x the bytes, "
                        f"{rate / base_rate:.2f}x the writes/s of one server"
                    )


if __name__ == "__main__":
    main()
