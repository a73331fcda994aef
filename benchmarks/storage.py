"""Redis memory per document for each codec, measured with INFO memory.

    python -m benchmarks.storage --docs 100000

Writes N synthetic unit vectors (384 dimensions) through the real publish path (codec, TTL,
conditional Lua writes) into an embedded valkey, or REDIS_URL's server (its database is flushed),
and prints used_memory delta / documents.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import redis

from embedding_assets.lib import pipeline
from embedding_assets.lib.feature_store import FeatureStore
from embedding_assets.lib.quantization import QUANTIZATIONS
from embedding_assets.lib.servers import ValkeyProcess
from embedding_assets.lib.versioning import EmbeddingSpec


def measure(url: str, quantization: str, n: int, dimension: int = 384) -> tuple[float, float, str]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    store = FeatureStore(client)
    spec = EmbeddingSpec(
        "all-minilm-l6-v2", "bench", dimension, 254, 32, 2, 200_000, "t1", "fp32", quantization
    )
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    frame = pl.DataFrame(
        {
            "doc_id": [f"doc-{i:07d}" for i in range(n)],
            "modified_at": pl.Series(np.full(n, 1_780_000_000_000)).cast(pipeline.TS),
            "content_hash": pl.Series(np.arange(n, dtype=np.uint64)),
            "vector": pl.Series(vectors, dtype=pl.Array(pl.Float32, dimension)),
        }
    )
    before = store.used_memory()
    started = time.perf_counter()
    calibration = pipeline.calibration_for(store, spec, [frame])
    pipeline.publish(store, spec, frame, calibration, now=int(time.time()), max_age_seconds=3600)
    seconds = time.perf_counter() - started
    return (store.used_memory() - before) / n, n / seconds, client.info("server")["redis_version"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    args = parser.parse_args()
    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = ValkeyProcess(Path(tempfile.mkdtemp(prefix="ea-storage-")))
        server.start()
        url = server.url
    try:
        print(f"{'codec':<8} {'documents':>10} {'bytes/doc':>10} {'writes/s':>10}  server")
        for quantization in QUANTIZATIONS:
            per_doc, rate, version = measure(url, quantization, args.docs)
            print(
                f"{quantization:<8} {args.docs:>10} {per_doc:>10.0f} {rate:>10.0f}  redis_version {version}"
            )
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
