"""Every runtime on the same real text, bare and through the pipeline, in one run.

    python -m benchmarks.runtimes                    # 2,000 Debian manual pages in 16 languages
    python -m benchmarks.runtimes --docs 500 --pipeline fp32,auto,openvino-int8

Prints, in this order and in this process:

1. the bare rate of every runtime and precision (torch fp32 and bf16, OpenVINO bf16/fp32/int8, ONNX
   Runtime fp32/int8) on exactly the windows the pipeline embeds, with 1 and 2 threads: inference
   alone on pre-tokenized, length-sorted batches, the fastest way this CPU runs the model;
2. the pipeline end to end (MongoDB to Redis, every step) per runtime, with its embedding step as a
   fraction of the fastest bare configuration and its end-to-end rate against torch fp32's;
3. per runtime, a fresh process's model load (cache warm: exported and verified once) and
   ``embed_query`` p50 / p95; for int8, a client of the version the pipeline wrote (its model is
   built from that version's calibration sample), in the second such process.

Servers come from MONGO_URI / REDIS_URL, or are embedded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from benchmarks import manpages

BATCH = 16
LABELS = ("fp32", "bf16", "openvino-bf16", "openvino-fp32", "openvino-int8", "onnx-fp32", "onnx-int8")


def pipeline_windows(texts: list[str]) -> tuple[list[str], list[int], str]:
    """The windows the pipeline embeds for ``texts`` (its window, overlap and pooling's cap)."""
    from embedding_assets import settings
    from embedding_assets.embedders.model_files import load_tokenizer, sentence_transformer_shape
    from embedding_assets.embedders.packaged import resolve
    from embedding_assets.lib.chunking import chunk_texts
    from embedding_assets.lib.pooling import windows_that_count

    folder = resolve(None)
    shape = sentence_transformer_shape(Path(folder))
    assert shape is not None
    configured = int(settings.get("EA_WINDOW_TOKENS"))
    window = min(configured, shape.max_text_tokens) if configured > 0 else shape.max_text_tokens
    chunked = chunk_texts(
        texts,
        load_tokenizer(folder),
        window=window,
        overlap=min(int(settings.get("EA_OVERLAP_TOKENS")), window - 1),
        max_windows=windows_that_count(str(settings.get("EA_POOLING"))),
    )
    chunks = [c.text for doc in chunked for c in doc]
    tokens = [c.n_tokens for doc in chunked for c in doc]
    return chunks, tokens, shape.document_prompt


def bare_rates(
    texts: list[str], labels: list[str], threads: list[int]
) -> tuple[dict[tuple[str, int], float], float]:
    """Documents/s of each runtime alone on the pipeline's windows of ``texts``, and the tokens
    per document of those windows."""
    import torch

    from embedding_assets import settings
    from embedding_assets.embedders.compiled import CompiledEmbedder
    from embedding_assets.embedders.packaged import resolve
    from embedding_assets.lib.runtimes import parse_label

    folder = resolve(None)
    chunks, tokens, prompt = pipeline_windows(texts)
    ordered = [chunks[i] for i in np.argsort(tokens, kind="stable")]
    print(
        f"bare: {len(texts)} documents, {len(chunks)} windows of {np.mean(tokens):.0f} tokens on average",
        flush=True,
    )
    calibration = random.Random(3).sample(chunks, min(300, len(chunks)))
    out: dict[tuple[str, int], float] = {}
    for label in labels:
        choice = parse_label(label)
        for n in threads:
            if choice.runtime == "torch":
                from sentence_transformers import SentenceTransformer

                torch.set_num_threads(n)
                model = SentenceTransformer(folder, device="cpu")
                ctx = torch.autocast("cpu", dtype=torch.bfloat16) if choice.precision == "bf16" else None

                def run(model: object = model, ctx: object = ctx, limit: int = 0) -> None:
                    texts = ordered[: limit * BATCH] if limit else ordered
                    with ctx or torch.inference_mode():  # type: ignore[attr-defined]
                        model.encode(texts, batch_size=BATCH, prompt=prompt or None)  # type: ignore[attr-defined]

            else:
                compiled = CompiledEmbedder(
                    folder,
                    choice,
                    cache_dir=settings.model_cache_dir(),
                    threads=n,
                    calibration=calibration if choice.precision == "int8" else None,
                )
                session = compiled.session
                batches = [
                    compiled._tokenized(ordered[i : i + BATCH], prompt) for i in range(0, len(ordered), BATCH)
                ]

                def run(session: object = session, batches: list = batches, limit: int = 0) -> None:
                    # OpenVINO: as many single-thread streams as threads, requests kept in flight
                    work = ((ids, mask, None) for ids, mask in (batches[:limit] if limit else batches))
                    session.run_many(work, lambda *_: None)  # type: ignore[attr-defined]

            warm_up(run)
            started = time.perf_counter()
            run()
            out[(label, n)] = len(texts) / (time.perf_counter() - started)
            print(f"  {label:<14} {n} thread(s) {out[(label, n)]:>8.1f} docs/s", flush=True)
    torch.set_num_threads(os.cpu_count() or 1)
    return out, sum(tokens) / max(len(texts), 1)


def warm_up(run: object) -> None:
    """Compilation, caches and thread pools: the first batches, not a whole pass."""
    run(limit=2)  # type: ignore[operator]


class PipelineRun(NamedTuple):
    end_to_end: float  # documents/s, MongoDB to Redis
    step: float  # documents/s of the embedding step
    version: str
    tokens_per_doc: float  # of the windows it embedded


def pipeline_rate(label: str, state: Path) -> PipelineRun:
    """One full run with ``label``."""
    import redis

    from embedding_assets.dev import harness
    from embedding_assets.lib.runtimes import parse_label

    if label == "auto":
        env = {"EA_RUNTIME": "auto", "EA_PRECISION": "auto"}
    else:
        choice = parse_label(label)
        env = {"EA_RUNTIME": choice.runtime, "EA_PRECISION": choice.precision}
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    os.environ.update({**env, "EA_PARQUET_DIR": str(state / f"parquet-{label}")})
    started = time.perf_counter()
    result = harness.materialize()
    wall = time.perf_counter() - started
    vectors = harness.metadata(result, "document_vectors")
    tokens = int(harness.metadata(result, "chunked_text")["tokens"])
    rows = int(harness.metadata(result, "feature_store_entries")["rows"])
    version = str(harness.metadata(result, "feature_store_entries")["version"])
    per_doc = tokens / max(int(vectors["embedded"]), 1)
    return PipelineRun(rows / wall, float(vectors["documents_per_second"]), version, per_doc)


# How both child scripts below end: the load's time, then 200 queries through ``query``.
_QUERIES = """
loaded = time.perf_counter() - started
times = []
for i in range(200):
    t = time.perf_counter()
    query(f"how do I copy a directory with its files {i}")
    times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"label": label, "load": loaded, "p50": times[100], "p95": times[190]}))
from embedding_assets.lib.processes import exit_without_teardown  # OpenVINO can abort teardown
exit_without_teardown(0)
"""

# A process that runs the configured runtime: argv runtime, precision.
LOAD_AND_QUERY = (
    """
import json, sys, time
started = time.perf_counter()
from embedding_assets.embedders.runtime_choice import transformer_embedder
embedder = transformer_embedder(None, device="cpu", runtime=sys.argv[1], precision=sys.argv[2])
embedder.encode(["warm up"])
label = embedder.precision
def query(text): embedder.encode_queries([text])
"""
    + _QUERIES
)

# A client's process: the version's own model (int8 is built from the calibration sample the pipeline
# recorded with the version, cached by its digest), its queries through ``embed_query``. argv Redis
# URL, version.
CLIENT_LOAD_AND_QUERY = (
    """
import json, sys, time
started = time.perf_counter()
from embedding_assets.client import EmbeddingClient
client = EmbeddingClient.from_url(sys.argv[1], sys.argv[2])
client.embed_query("warm up")
label = client.query_embedder().precision
query = client.embed_query
"""
    + _QUERIES
)


def _child(script: str, *args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True, timeout=900
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def client_load_and_query(redis_url: str, version: str) -> dict[str, float]:
    return _child(CLIENT_LOAD_AND_QUERY, redis_url, version)


def load_and_query(label: str) -> dict[str, float]:
    from embedding_assets.lib.runtimes import parse_label

    runtime, precision = ("auto", "auto") if label == "auto" else tuple(vars(parse_label(label)).values())
    return _child(LOAD_AND_QUERY, runtime, precision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=2000, help="manual pages (a seeded sample)")
    parser.add_argument("--bare", default=",".join(LABELS), help="runtimes timed bare")
    parser.add_argument("--bare-docs", type=int, default=200, help="the first N pages, for the bare rates")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--pipeline", default="fp32,auto", help="runtimes run through the pipeline")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "embedding-assets" / "quality"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("EA_DEVICE", "cpu")
    dataset = manpages.build(Path(args.cache))
    documents = random.Random(5).sample(dataset["documents"], min(args.docs, len(dataset["documents"])))
    languages = len({d["language"] for d in documents})
    print(f"{len(documents)} manual pages in {languages} languages", flush=True)

    from benchmarks.quality import load
    from embedding_assets.dev.harness import collection
    from embedding_assets.dev.servers import EmbeddedServers
    from embedding_assets.lib.text import document_text
    from embedding_assets.stores.feature_store import FeatureStore

    state = Path(tempfile.mkdtemp(prefix="ea-runtimes-"))
    with EmbeddedServers(state) as servers:
        os.environ.update({**servers.env, "MONGO_DB": "ea_runtimes", "MONGO_COLLECTION": "documents"})
        load(collection(dict(os.environ)), {"documents": documents})

        print("\n## Through the pipeline (MongoDB to Redis), one full run each", flush=True)
        runs: dict[str, PipelineRun] = {}
        spec_labels: dict[str, str] = {}  # what each run resolved to (auto: the runtime it chose)
        int8_clients: dict[str, dict[str, float]] = {}
        for label in [s.strip() for s in args.pipeline.split(",") if s.strip()]:
            runs[label] = pipeline_rate(label, state)
            versions = FeatureStore.from_url(os.environ["REDIS_URL"]).control.versions()
            spec_labels[label] = versions[runs[label].version].precision
            if spec_labels[label] == "openvino-int8":
                # the version's own model, built from its recorded calibration: a client of it, while
                # the version is in Redis; twice, so that the second process finds the model built
                url, version = os.environ["REDIS_URL"], runs[label].version
                int8_clients[label] = [client_load_and_query(url, version) for _ in range(2)][-1]
            print(
                f"  {label:<14} end to end {runs[label].end_to_end:>7.1f} docs/s, embedding step "
                f"{runs[label].step:>7.1f} docs/s ({runs[label].version})",
                flush=True,
            )
        spec = next(iter(FeatureStore.from_url(os.environ["REDIS_URL"]).control.versions().values()))
        texts = [document_text(d["title"], d["body"], spec).text for d in documents]

        print("\n## Bare, on the same windows", flush=True)
        threads = [int(t) for t in args.threads.split(",")]
        labels = [s.strip() for s in args.bare.split(",") if s.strip()]
        bare, bare_tokens_per_doc = bare_rates(texts[: args.bare_docs], labels, threads)

    best_key = max(bare, key=lambda k: bare[k])
    best = bare[best_key]
    print(f"\n## Summary ({len(documents)} manual pages, {os.cpu_count()} cores)")
    print(f"fastest bare configuration: {best_key[0]}, {best_key[1]} thread(s), {best:.1f} docs/s")
    for label, n in sorted(bare, key=lambda k: -bare[k]):
        print(
            f"  bare {label:<14} {n} thread(s) {bare[(label, n)]:>8.1f} docs/s  {bare[(label, n)] / best:.2f}"
        )
    torch_fp32 = runs.get("fp32")
    for label, (e2e, step, version, tokens_per_doc) in runs.items():
        own = max((v for (lb, _), v in bare.items() if lb == spec_labels.get(label, label)), default=0.0)
        # the bare rates are on the first pages, the pipeline's on all of them: the same model work
        # is the same tokens, so the step is compared in tokens/s too (documents differ in length)
        per_token = tokens_per_doc / bare_tokens_per_doc
        line = (
            f"pipeline {label:<10} ({version}): embedding step {step / best:.2f} of the fastest bare "
            f"in documents/s, {step * per_token / best:.2f} in tokens/s ({tokens_per_doc:.0f} tokens "
            f"per document, the bare pages {bare_tokens_per_doc:.0f})"
        )
        if own:
            line += f"; {step * per_token / own:.2f} of its own runtime's best bare in tokens/s"
        if torch_fp32:
            base = torch_fp32.end_to_end
            line += f"; end to end {e2e / base:.2f}x torch fp32's ({e2e:.1f} against {base:.1f} docs/s)"
        print(line)

    print("\n## A fresh process: model load (cache warm) and embed_query, 200 queries")
    for label in ["fp32", "auto", *[k for k in runs if k not in ("fp32", "auto")]]:
        if label in int8_clients:  # a client of the version the pipeline wrote (second process)
            found = int8_clients[label]
            label = f"{label}, client"
        else:
            found = load_and_query(label)
        print(
            f"  {label:<14} ({found['label']}): load {found['load']:.2f} s, embed_query p50 "
            f"{found['p50'] * 1000:.1f} ms, p95 {found['p95'] * 1000:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
