"""The remote backend against a real embedding service: the pipeline's documents/s through Infinity
against Infinity's own throughput on the same texts, and the cosine of remote to local vectors.

    python -m benchmarks.remote --docs 600
    python -m benchmarks.remote --docs 600 --urls http://gpu-1:7997,http://gpu-2:7997 --served-model M

Without ``--urls``, Infinity is started on this machine (dev/infinity.py, its own venv). The
baseline, in this process: the chunk texts the pipeline embedded, posted straight to the service
(``/embeddings``, several batch sizes and concurrencies; the best counts), with no pipeline around
them. The ratio is the pipeline's document_vectors step against that best (goal >= 0.9).

The corpus is one shard (EA_NUM_SHARDS=1 unless set): a deployment's shards hold tens of thousands
of documents, and each shard's requests end in a barrier, which at 16 shards of 37 documents
costs a sixth of the throughput (measured: ratio 0.84 there, docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--urls", default="", help="endpoints serving the model (default: start Infinity)")
    parser.add_argument("--served-model", default="", help="the model's name at those endpoints")
    parser.add_argument(
        "--sweep",
        default="16x2,16x4,16x8,32x2,32x4,32x8,64x2,64x4,64x8",
        help="direct-client configurations, batch x in flight; the best one is the baseline",
    )
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="ea-remote-"))
    os.environ.setdefault("EA_NUM_SHARDS", "1")  # production-sized shards: see the docstring
    os.environ.update(
        {"EA_PARQUET_DIR": str(state / "parquet"), "MONGO_DB": "ea_remote", "HF_HUB_OFFLINE": "1"}
    )
    from embedding_assets.dev.infinity import InfinityServer, default_venv
    from embedding_assets.dev.servers import EmbeddedServers

    with ExitStack() as stack:
        servers = stack.enter_context(EmbeddedServers(state))
        os.environ.update(servers.env)
        urls, served = args.urls, args.served_model
        if not urls:
            venv = default_venv()
            infinity = stack.enter_context(InfinityServer(venv, log=state / "infinity.log"))
            urls, served = infinity.url, infinity.served_model
        os.environ.update({"EA_BACKEND": "remote", "EA_EMBED_URLS": urls, "EA_EMBED_MODEL": served})
        run(args, urls.split(",")[0], served)


def run(args: argparse.Namespace, url: str, served: str) -> None:
    import pymongo

    from benchmarks.run import step_seconds
    from embedding_assets.defs.partitions import shard_partitions
    from embedding_assets.dev import corpus
    from embedding_assets.dev.harness import Daemon, metadata, sweep_request
    from embedding_assets.stores.shard_state import ShardStateStore

    coll = pymongo.MongoClient(os.environ["MONGO_URI"], tz_aware=True)["ea_remote"]["documents"]
    coll.drop()
    coll.insert_many(list(corpus.generate_documents(args.docs, mean_sentences=20)))
    _post(url, served, ["warm up"] * 8)

    daemon = Daemon()
    t = time.perf_counter()
    daemon.run([sweep_request()])
    wall = time.perf_counter() - t
    result = daemon.results[-1]
    assert result.success
    embedded = int(metadata(result, "document_vectors")["embedded"])
    step = step_seconds(daemon.instance, result.run_id)["document_vectors"]
    pipeline = embedded / step

    state = ShardStateStore(os.environ["EA_PARQUET_DIR"], len(shard_partitions.get_partition_keys()))
    texts: list[str] = []
    for key in shard_partitions.get_partition_keys():
        frame = state.load("chunked_text", key, ["chunks"])
        if frame is not None:
            texts += [c for chunks in frame["chunks"].to_list() for c in chunks or []]
    print(f"{embedded} documents, {len(texts)} chunks; the run took {wall:.1f} s", flush=True)

    best = (0.0, 0, 0)
    for config in args.sweep.split(","):
        batch, concurrency = (int(x) for x in config.split("x"))
        seconds = _direct(url, served, texts, batch, concurrency)
        rate = embedded / seconds
        print(f"  Infinity alone, batch {batch:>2}, {concurrency} in flight: {rate:6.1f} docs/s", flush=True)
        best = max(best, (rate, batch, concurrency))

    cosine = _cosine_to_local(url, served, texts[:200])
    print()
    print(f"through the pipeline (document_vectors step): {pipeline:.1f} docs/s")
    print(
        f"Infinity alone on the same chunks, best client: {best[0]:.1f} docs/s "
        f"(batch {best[1]}, {best[2]} in flight)"
    )
    print(f"ratio pipeline / Infinity alone: {pipeline / best[0]:.2f}  (goal >= 0.9)")
    print(f"whole run, MongoDB to Redis: {embedded / wall:.1f} docs/s")
    print(
        f"cosine of remote to local vectors, {min(200, len(texts))} chunks: min {cosine:.6f}  (goal >= 0.99)"
    )


def _post(url: str, model: str, texts: list[str]) -> list[list[float]]:
    request = urllib.request.Request(
        url.rstrip("/") + "/embeddings",
        data=json.dumps({"model": model, "input": texts}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return [d["embedding"] for d in json.loads(response.read())["data"]]


def _direct(url: str, model: str, texts: list[str], batch: int, concurrency: int) -> float:
    """Seconds to embed ``texts`` with plain concurrent POSTs, no pipeline."""
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    t = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda b: _post(url, model, b), batches))
    return time.perf_counter() - t


def _cosine_to_local(url: str, model: str, texts: list[str]) -> float:
    from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder

    local = SentenceTransformerEmbedder(device="cpu", precision="fp32").encode(texts)
    remote = np.asarray(_post(url, model, texts), dtype=np.float32)
    remote /= np.linalg.norm(remote, axis=1, keepdims=True)
    return float(np.min(np.sum(local * remote, axis=1)))


if __name__ == "__main__":
    main()
