"""One command: a corpus into MongoDB, the pipeline over it, and a table of what it cost.

    python -m benchmarks.run --docs 1000000 --backend static
    python -m benchmarks.run --docs 20000 --backend transformer
    python -m benchmarks.run --docs 2000 --backend transformer --peers     # LlamaIndex, LangChain too

Servers come from MONGO_URI / REDIS_URL, or are embedded (valkey, SecantusDB). Prints:
documents/s per stage and end to end for a full pass, a 1%-changed pass (sensor runs) and a
no-change pass; the bare model on the same texts right before the full pass (a child process)
and right after it (this process), the better of the two, and our ratio to it; Redis bytes per
document for each codec; lookup latency; peak RSS. ``--peers`` also runs LlamaIndex and
LangChain over the same documents, model (all-MiniLM-L6-v2, which it then sets as EA_MODEL) and
Redis (benchmarks/peers.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ASSETS = ("document_snapshots", "chunked_text", "document_vectors", "feature_store_entries")


@dataclass
class Pass:
    label: str
    documents: int
    embedded: int
    written: int
    wall: float
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def pipeline_seconds(self) -> float:
        return sum(self.steps.get(a, 0.0) for a in ASSETS)


def static_dir() -> Path:
    from embedding_assets import settings

    return settings.static_dir()


def main() -> None:
    from embedding_assets.process_memory import allow_an_arena_per_thread

    # this process runs the pipeline as a run's process does, which imports definitions.py first
    allow_an_arena_per_thread()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--backend", default="static", choices=["static", "transformer"])
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of documents edited")
    parser.add_argument("--sample", type=int, default=0, help="texts for the bare-model baseline")
    parser.add_argument("--peers", action="store_true", help="also run LlamaIndex and LangChain")
    parser.add_argument("--peer-python", default=os.environ.get("EA_PEER_PYTHON", ""))
    args = parser.parse_args()
    args.sample = args.sample or min(args.docs, 600 if args.backend == "transformer" else 20_000)
    if args.peers:  # the peers embed with all-MiniLM-L6-v2 (benchmarks/peers.py): the same model here
        os.environ.setdefault("EA_MODEL", "all-MiniLM-L6-v2")

    state = Path(tempfile.mkdtemp(prefix="ea-bench-"))
    os.environ.update(
        {
            "EA_BACKEND": args.backend,
            "EA_PARQUET_DIR": str(state / "parquet"),
            "MONGO_DB": "ea_bench",
            "HF_HUB_OFFLINE": "1",
            "EA_STATIC_DIR": os.environ.get("EA_STATIC_DIR", str(static_dir())),
        }
    )
    from embedding_assets.dev.servers import EmbeddedServers

    if args.backend == "static":
        prepare_static()
    with EmbeddedServers(state) as servers:
        os.environ.update(servers.env)
        run(args, servers.mongo_uri, servers.redis_url)  # type: ignore[arg-type]


def prepare_static() -> None:
    """The distilled model, built before the run (once per machine) in a child process, so that the
    run's peak RSS is its own; the distillation's time and memory on a line of their own. The
    child also builds the multilingual model it is distilled from, when the machine has none yet:
    that build loads the transformer, which would otherwise count in this process's peak."""
    cache = Path(os.environ["EA_STATIC_DIR"])
    started = time.perf_counter()
    code = (
        "import sys; from pathlib import Path; "
        "from embedding_assets.embedders.packaged import resolve; "
        "from embedding_assets.embedders.static import distilled_path, ensure_distilled; "
        "cache = Path(sys.argv[1]); source = resolve(None); path = distilled_path(cache, source, 256); "
        "cached = (path / 'config.json').exists(); ensure_distilled(cache, source, 256); "
        "print(('cached ' if cached else 'built ') + path.name)"
    )
    # its progress and errors on stderr, as they come; its answer on stdout
    command = [sys.executable, "-c", code, str(cache)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    how, name = done.stdout.strip().splitlines()[-1].split(" ", 1)
    if how == "cached":
        print(f"static model: {name}, in the machine's cache ({cache})", flush=True)
        return
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"static model: {name} distilled in {time.perf_counter() - started:.0f} s before the run, "
        f"peak RSS {peak:.0f} MB (a child process: the run's peak below is its own)",
        flush=True,
    )


def load_corpus(mongo_uri: str, n: int) -> tuple[object, float, float]:
    """Streams N generated documents into a fresh collection; returns it, mean words, seconds."""
    import itertools

    import pymongo

    from embedding_assets.dev import corpus

    coll = pymongo.MongoClient(mongo_uri, tz_aware=True)["ea_bench"]["documents"]
    coll.drop()
    started = time.perf_counter()
    words = 0
    docs = corpus.generate_documents(n, mean_sentences=20)
    while batch := list(itertools.islice(docs, 10_000)):
        words += sum(len(d["body"].split()) for d in batch)
        coll.insert_many(batch, ordered=False)
    coll.create_index("doc_id")
    coll.create_index([("modified_at", 1), ("doc_id", 1)])
    return coll, words / max(n, 1), time.perf_counter() - started


def step_seconds(instance: object, run_id: str) -> dict[str, float]:
    """Each step's wall time, from the run's STEP_START / STEP_SUCCESS events."""
    started: dict[str, float] = {}
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):  # type: ignore[attr-defined]
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value == "STEP_SUCCESS" and event.step_key in started:
            out[event.step_key] = entry.timestamp - started[event.step_key]
    return out


def run(args: argparse.Namespace, mongo_uri: str, redis_url: str) -> None:
    import redis

    from embedding_assets.defs.sensors import document_changes_sensor
    from embedding_assets.dev import corpus
    from embedding_assets.dev.harness import Daemon, metadata, sweep_request
    from embedding_assets.stores.feature_store import FeatureStore

    redis.Redis.from_url(redis_url).flushall()
    coll, words, load_s = load_corpus(mongo_uri, args.docs)
    print(f"loaded {args.docs} documents (mean {words:.0f} words of body) in {load_s:.1f} s", flush=True)
    store = FeatureStore.from_url(redis_url)
    daemon = Daemon()
    passes: list[Pass] = []

    def full_pass(label: str) -> Pass:
        t = time.perf_counter()
        daemon.run([sweep_request()])
        wall = time.perf_counter() - t
        r = daemon.results[-1]
        assert r.success, f"{label}: the run failed"
        p = Pass(
            label,
            args.docs,
            int(metadata(r, "document_vectors")["embedded"]),
            int(metadata(r, "feature_store_entries")["written"]),
            wall,
            step_seconds(daemon.instance, r.run_id),
        )
        passes.append(p)
        print(f"{label}: {wall:.1f} s", flush=True)
        return p

    # the bare model right before the full pass (in a child, so that the pass's peak RSS stays
    # its own) and right after it (in this process), each configuration at its best of the two:
    # the machine as the pass had it. A shared machine's speed drifts by tens of percent from
    # minute to minute, and one reading in a slow minute would flatter the ratio.
    texts_file = Path(os.environ["EA_PARQUET_DIR"]).parent / "bare-texts.json"
    before = bare_in_child(args, texts_file)
    print(f"bare encode right before the full pass: {max(before.values()):.0f} docs/s", flush=True)
    with MemoryBeside() as beside:
        first = full_pass("full pass, empty store")
    peak_rss_mb = backfill_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS so far (corpus load and full pass): {backfill_rss_mb:.0f} MB", flush=True)
    if beside.child_mb:
        print(
            f"during the pass, sampled every 0.1 s: this process {beside.own_mb:.0f} MB, the audit's "
            f"sample process {beside.child_mb:.0f} MB, both at once at most {beside.both_mb:.0f} MB",
            flush=True,
        )
    # read only now: the baseline's texts (32 MB for 20,000 documents) are this benchmark's, not
    # the pipeline's, and held through the pass they counted in its peak
    texts = json.loads(texts_file.read_text())
    after = bare_baseline(args, texts)
    bare = best_of(before, after)
    print_limit(first)
    print(
        f"bare encode right after it: {max(after.values()):.0f} docs/s; the better of the two, "
        f"the baseline below: {max(bare.values()):.0f} docs/s",
        flush=True,
    )
    daemon.tick(document_changes_sensor)  # the sensor starts at the newest document

    changed = random.Random(1).sample(range(args.docs), int(args.docs * args.changed))
    # after every generated timestamp, and settled: the change sensor stays a few seconds behind
    # the present (sensors.SETTLE_SECONDS) so that it never passes a write still being committed
    when = max(
        dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30), corpus.EPOCH + dt.timedelta(seconds=args.docs + 1)
    )
    edit(coll, changed, when, "Edited body")
    t = time.perf_counter()
    before = len(daemon.results)
    daemon.sync(document_changes_sensor)
    runs = daemon.results[before:]
    passes.append(
        Pass(
            f"{args.changed:.0%} changed, sensor runs ({len(runs)})",
            len(changed),
            sum(int(metadata(r, "document_vectors")["embedded"]) for r in runs),
            sum(int(metadata(r, "feature_store_entries")["written"]) for r in runs),
            time.perf_counter() - t,
        )
    )
    edit(coll, changed, when + dt.timedelta(seconds=10), "Edited again")
    full_pass(f"{args.changed:.0%} changed, daily sweep")
    full_pass("nothing changed, daily sweep")
    daemon.sync(document_changes_sensor)  # the sensor catches up with the edits the sweep took
    t = time.perf_counter()
    assert not daemon.tick(document_changes_sensor)  # what keeps the store current: finds nothing
    passes.append(Pass("nothing changed, sensor tick", args.docs, 0, 0, time.perf_counter() - t))
    peak_rss_mb = max(peak_rss_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    audits = time_audits(mongo_uri, store)

    print_passes(args, passes, backfill_rss_mb, peak_rss_mb)
    print_audits(args, audits, passes[-2])
    ours = args.docs / first.wall
    print_bare(args, bare, ours, args.docs / first.steps["document_vectors"])
    print_lookups(store, args.docs)
    if args.backend == "static":  # before print_storage, which flushes the store to measure it
        print_quality(coll, min(args.docs, 2_000))
    print_storage(redis_url, args.docs, store)
    if args.peers:
        run_peers(args, mongo_uri, redis_url, ours, passes[-2], passes[-1])


def time_audits(mongo_uri: str, store: object) -> dict[str, object]:
    """The store audit of the healthy store just built: sampled (EA_AUDIT_SAMPLE documents) and full."""
    from embedding_assets import settings
    from embedding_assets.audit.store import audit_store
    from embedding_assets.sources.mongo import MongoDocumentSource

    source = MongoDocumentSource(mongo_uri, "ea_bench", "documents")
    out = {}
    for mode in ("sampled", "full"):
        found = audit_store(source, store, mode=mode, sample_size=int(settings.get("EA_AUDIT_SAMPLE")))  # type: ignore[arg-type]
        assert not found.repairs() and not found.control_problems, f"{mode} audit found problems"
        out[mode] = found
    return out


def print_audits(args: argparse.Namespace, audits: dict[str, object], sweep: Pass) -> None:
    print("\n## Store audit of the active version against MongoDB (audit/store.py), healthy store")
    for mode, found in audits.items():
        print(
            f"{mode:<8} {found.examined:>8} documents examined, {found.entries_examined:>8} entries for "  # type: ignore[attr-defined]
            f"extras: {found.seconds:6.1f} s"  # type: ignore[attr-defined]
        )
    full = audits["full"].seconds  # type: ignore[attr-defined]
    print(
        f"full audit / no-change daily sweep ({sweep.wall:.1f} s): {full / sweep.wall:.2f}x; "
        f"sampled 95% bound on the uncovered share with none found: "
        f"{audits['sampled'].outcomes(0.001)['coverage'].metadata['uncovered_upper_bound_95']:.4%}"  # type: ignore[attr-defined]
    )


def edit(coll: object, indexes: list[int], when: dt.datetime, text: str) -> None:
    from pymongo import UpdateOne

    ops = [
        UpdateOne(
            {"doc_id": f"doc-{i:06d}"},
            {"$set": {"body": f"{text} {i}.", "modified_at": when + dt.timedelta(milliseconds=n)}},
        )
        for n, i in enumerate(indexes)
    ]
    for start in range(0, len(ops), 1000):
        coll.bulk_write(ops[start : start + 1000], ordered=False)  # type: ignore[attr-defined]


def print_passes(
    args: argparse.Namespace, passes: list[Pass], backfill_rss_mb: float, peak_rss_mb: float
) -> None:
    print(f"\n## Pipeline: {args.docs} documents, backend {args.backend}, {os.cpu_count()} cores")
    print(
        f"peak RSS of the full pass (the backfill, corpus generation included): {backfill_rss_mb:.0f} MB; "
        f"of the process after every pass and the bare baselines: {peak_rss_mb:.0f} MB (the baselines "
        "load sentence-transformers; the ephemeral Dagster instance keeps every run's events in memory)"
    )
    head = f"{'pass':<34} {'docs':>8} {'embedded':>9} {'written':>9} {'wall s':>8} {'docs/s':>8}"
    print(head + "".join(f" {a.split('_')[-1][:9]:>9}" for a in ASSETS))
    for p in passes:
        line = (
            f"{p.label:<34} {p.documents:>8} {p.embedded:>9} {p.written:>9} {p.wall:>8.1f} "
            f"{p.documents / p.wall:>8.0f}"
        )
        line += "".join(f" {args.docs / p.steps[a]:>9.0f}" if a in p.steps else f" {'':>9}" for a in ASSETS)
        print(line)
    first = passes[0]
    print(
        f"stage columns: documents/s of each asset's step in full passes; the four steps together "
        f"{args.docs / first.pipeline_seconds:.0f} docs/s, the whole run (checks, run start) "
        f"{args.docs / first.wall:.0f} docs/s"
    )


class MemoryBeside:
    """Resident memory of this process and of the audit's sample process (a child that reads beside
    the publish, audit/sample_process.py), sampled together: the pass's memory is both."""

    def __init__(self, every: float = 0.1) -> None:
        import threading

        self.every = every
        self.own_mb = self.child_mb = self.both_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemoryBeside:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss_mb(pid: int | str) -> float:
        try:
            with open(f"/proc/{pid}/status") as status:
                return next(
                    (int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")), 0.0
                )
        except OSError:
            return 0.0

    @staticmethod
    def _sample_processes() -> list[str]:
        pids = []
        for task in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
            try:
                pids += task.read_text().split()
            except OSError:
                continue
        found = []
        for pid in pids:
            try:
                if b"audit.sample_process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
        return found

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            own = self._rss_mb(os.getpid())
            child = sum(self._rss_mb(p) for p in self._sample_processes())
            self.own_mb, self.child_mb = max(self.own_mb, own), max(self.child_mb, child)
            self.both_mb = max(self.both_mb, own + child)


def print_limit(first: Pass) -> None:
    """Where the full pass's time goes, and the step that limits it."""
    parts = {a: first.steps.get(a, 0.0) for a in ASSETS}
    parts["outside the steps (run start, checks, audit)"] = max(first.wall - first.pipeline_seconds, 0.0)
    slowest = max(ASSETS, key=lambda a: parts[a])
    shares = ", ".join(
        f"{name} {seconds:.1f} s ({seconds / first.wall:.0%})" for name, seconds in parts.items()
    )
    print(f"full pass, where the time goes: {shares}; the limiting step: {slowest}")


def sample_texts(coll: object, n: int) -> list[str]:
    """The texts the pipeline embeds under the configured version, for the first n documents."""
    import dagster as dg

    from embedding_assets.defs.resources import build_resources
    from embedding_assets.lib.text import document_text

    with dg.build_resources({"model": build_resources()["embedding_model"]}) as resources:
        spec = resources.model.spec()
    docs = coll.find({}, {"title": 1, "body": 1}).sort("_id", 1).limit(n)  # type: ignore[attr-defined]
    return [document_text(d.get("title"), d.get("body"), spec).text for d in docs]


def best_of(*measured: dict[str, float]) -> dict[str, float]:
    """Each configuration's best rate: the bare model as fast as the machine gave it."""
    return {name: max(m[name] for m in measured) for name in measured[0]}


def bare_baseline(args: argparse.Namespace, texts: list[str]) -> dict[str, float]:
    """Documents/s of the bare model on the same texts, in this process, per configuration."""
    if args.backend == "static":
        return bare_static(texts)
    return bare_transformer(texts)


def bare_in_child(args: argparse.Namespace, texts_file: Path) -> dict[str, float]:
    """``bare_baseline`` in a child process, which writes the texts it measured to ``texts_file``
    (the configured version's texts of the first ``args.sample`` documents)."""
    code = (
        "import argparse, json, os, sys, pymongo; from benchmarks.run import bare_baseline, sample_texts; "
        "coll = pymongo.MongoClient(os.environ['MONGO_URI'])['ea_bench']['documents']; "
        "texts = sample_texts(coll, int(sys.argv[2])); open(sys.argv[3], 'w').write(json.dumps(texts)); "
        "print(json.dumps(bare_baseline(argparse.Namespace(backend=sys.argv[1]), texts)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, args.backend, str(args.sample), str(texts_file)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rate(fn: object, n: int) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return n / (time.perf_counter() - t)


def bare_static(texts: list[str]) -> dict[str, float]:
    from embedding_assets.embedders.static import StaticEmbedder

    embedder = StaticEmbedder(None, cache_dir=Path(os.environ["EA_STATIC_DIR"]))
    lead = StaticEmbedder(None, cache_dir=Path(os.environ["EA_STATIC_DIR"]), pooling="lead")
    model = embedder.model
    model.encode(texts[:100])
    embedder.encode(texts[:100])
    lead.encode(texts[:100])
    return {
        "SentenceTransformer.encode (StaticEmbedding, defaults)": _rate(
            lambda: model.encode(texts), len(texts)
        ),
        "project StaticEmbedder.encode (fast tokenizer, sparse pooling)": _rate(
            lambda: embedder.encode(texts), len(texts)
        ),
        "project StaticEmbedder.encode, lead pooling (the pipeline's default)": _rate(
            lambda: lead.encode(texts), len(texts)
        ),
    }


def bare_transformer(texts: list[str]) -> dict[str, float]:
    """The model alone on exactly the chunks the pipeline embeds (the same texts, whole, cut in
    the pipeline's windows, with the model's document prompt), per configuration; the first line
    is what most code does: the default encode on whole documents, truncated at the model's limit."""
    from sentence_transformers import SentenceTransformer

    from embedding_assets import settings
    from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder, cpu_has_bf16
    from embedding_assets.lib.chunking import chunk_texts
    from embedding_assets.lib.pooling import windows_that_count

    embedder = SentenceTransformerEmbedder(device="cpu")
    prompt = embedder.document_prompt or None
    model = SentenceTransformer(embedder.model_name, device="cpu")
    model.encode(texts[:32], prompt=prompt)
    configured = int(settings.get("EA_WINDOW_TOKENS"))
    window = min(configured, embedder.max_tokens) if configured > 0 else embedder.max_tokens
    chunked = chunk_texts(
        texts,
        model.tokenizer,
        window=window,
        overlap=min(int(settings.get("EA_OVERLAP_TOKENS")), window - 1),
        max_windows=windows_that_count(str(settings.get("EA_POOLING"))),
    )
    chunks = [c.text for doc in chunked for c in doc]
    tokens = [c.n_tokens for doc in chunked for c in doc]
    print(
        f"bare-model sample: {len(texts)} documents, {len(chunks)} chunks of at most {window} "
        f"tokens, {sum(tokens) / len(texts):.0f} tokens per document ({embedder.model_name})",
        flush=True,
    )
    n = len(texts)
    limit = model.max_seq_length
    out = {
        f"default encode, whole documents (truncated at {limit} tokens)": _rate(
            lambda: model.encode(texts, prompt=prompt), n
        ),
        "default encode (fp32, batch 32), the pipeline's chunks": _rate(
            lambda: model.encode(chunks, prompt=prompt), n
        ),
    }
    # every runtime and precision on the same windows, 1 and 2 threads (benchmarks/runtimes.py):
    # the fastest of them is the limit the pipeline's embedding step is compared with
    from benchmarks.runtimes import LABELS, bare_rates

    usable = [label for label in LABELS if "bf16" not in label or cpu_has_bf16()]
    for (label, threads), rate in bare_rates(texts, usable, [1, 2])[0].items():
        out[f"{label}, {threads} thread(s), batch 16, windows sorted by token count"] = rate
    return out


def print_bare(args: argparse.Namespace, bare: dict[str, float], ours: float, stage: float) -> None:
    default = next(iter(bare.values()))
    # the best configuration doing the pipeline's work (truncating documents is less work)
    best_label, best = max(((k, v) for k, v in bare.items() if "truncated" not in k), key=lambda kv: kv[1])
    print(
        f"\n## Bare model on the first {args.sample} texts, right before (a child process) and right "
        "after (this process) the full pass: the better of the two"
    )
    for label, rate in bare.items():
        print(f"{label:<64} {rate:>8.0f} docs/s")
    print(
        f"pipeline end to end (full pass, MongoDB to Redis) {ours:.0f} docs/s: "
        f"{ours / default:.2f}x the default encode, {ours / best:.0%} of the best bare configuration "
        f"({best_label}); the embedding step alone {stage:.0f} docs/s, {stage / best:.0%} of it"
    )


def print_lookups(store: object, n: int, gets: int = 5_000, batches: int = 500) -> None:
    import numpy as np

    from embedding_assets.client import EmbeddingClient

    client = EmbeddingClient(store)  # type: ignore[arg-type]
    rng = random.Random(3)
    ids = [f"doc-{rng.randrange(n):06d}" for _ in range(gets)]
    for doc_id in ids[:200]:
        client.get(doc_id)
    single = []
    for doc_id in ids:
        t = time.perf_counter()
        found = client.get(doc_id)
        single.append(time.perf_counter() - t)
        assert found is not None
    many = []
    for _ in range(batches):
        batch = [f"doc-{rng.randrange(n):06d}" for _ in range(100)]
        t = time.perf_counter()
        client.get_many(batch)
        many.append(time.perf_counter() - t)
    s, m = np.asarray(single) * 1000, np.asarray(many) * 1000
    print("\n## Lookups through EmbeddingClient (decoded float32 vectors), loopback")
    print(
        f"get            p50 {np.percentile(s, 50):.3f} ms  p99 {np.percentile(s, 99):.3f} ms  ({gets} calls)"
    )
    print(
        f"get_many(100)  p50 {np.percentile(m, 50):.3f} ms  p99 {np.percentile(m, 99):.3f} ms  "
        f"({batches} calls)"
    )


def print_storage(redis_url: str, n: int, store: object) -> None:
    from benchmarks.storage import flushed_bytes, measure

    client = store.client  # type: ignore[attr-defined]
    server = client.info("server")
    encoding = store.compact_encoding(tune=False)  # type: ignore[attr-defined]
    spec = store.control.versions()[store.control.active_version()]  # type: ignore[attr-defined]
    print(
        f"\n## Redis memory per document (keys' used_memory / documents, measured by flushing them), "
        f"{server.get('server_name', 'redis')} {server['redis_version']}, buckets {encoding}"
    )
    own = flushed_bytes(client) / n  # the run's data is not needed any more
    print(f"pipeline's own entries, {spec.quantization} x {spec.dimension}: {own:>6.0f} B/doc")
    for codec in ("int8", "binary"):
        per_doc, _, _ = measure(redis_url, codec, n, db=1)
        label = f"{codec} x 384 (both packaged models), {n} synthetic vectors, same publish path"
        print(f"{label}: {per_doc:>6.0f} B/doc")


def print_quality(coll: object, n: int) -> None:
    """The static tier against the transformer on the same texts."""
    import numpy as np

    from embedding_assets.dev import corpus
    from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder
    from embedding_assets.embedders.static import StaticEmbedder

    texts = sample_texts(coll, n)
    docs = list(corpus.generate_documents(n, mean_sentences=20))
    labels = np.asarray([f"{d['language']}/{d['topic']}" for d in docs])
    static = StaticEmbedder(None, cache_dir=Path(os.environ["EA_STATIC_DIR"])).encode(texts)
    exact = SentenceTransformerEmbedder(precision="fp32").encode(texts)
    report = quality(exact, static, labels)
    print(f"\n## Static tier quality against the transformer, {n} documents of the sample corpus")
    for key, value in report.items():
        print(f"{key:<52} {value:.3f}")


def quality(exact: object, approx: object, labels: object, k: int = 10) -> dict[str, float]:
    import numpy as np

    a, b = np.asarray(exact), np.asarray(approx)
    sa, sb = a @ a.T, b @ b.T
    upper = np.triu_indices(len(a), 1)

    def ranks(x: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(x)).astype(np.float64)

    ra, rb = ranks(sa[upper]), ranks(sb[upper])
    spearman = float(np.corrcoef(ra, rb)[0, 1])
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    na, nb = np.argsort(-sa, axis=1)[:, :k], np.argsort(-sb, axis=1)[:, :k]
    overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb, strict=True)]))
    lab = np.asarray(labels)
    return {
        "Spearman of pair cosines": spearman,
        f"nearest-neighbour@{k} overlap": overlap,
        f"transformer: same language+topic in top {k}": float(np.mean(lab[na] == lab[:, None])),
        f"static: same language+topic in top {k}": float(np.mean(lab[nb] == lab[:, None])),
    }


def run_peers(
    args: argparse.Namespace, mongo_uri: str, redis_url: str, ours: float, sweep: Pass, tick: Pass
) -> None:
    python = args.peer_python or str(Path(".venv-peers/bin/python").absolute())
    if not Path(python).exists():
        print(f"\n## Peers: skipped, no interpreter at {python} (sh benchmarks/peers-venv.sh makes one)")
        return
    print("\n## Peers on the same documents, model and Redis (initial load, then an unchanged re-index)")
    ours_sweep, ours_tick = args.docs / sweep.wall, args.docs / tick.wall
    print(
        f"ours        load {ours:>8.1f} docs/s   unchanged: sensor tick {ours_tick:>10.0f} docs/s, "
        f"full daily sweep {ours_sweep:>8.0f} docs/s"
    )
    for peer in ("llamaindex", "langchain"):
        out = subprocess.run(
            [python, "-m", "benchmarks.peers", peer, "--docs", str(args.docs)],
            env={**os.environ, "MONGO_URI": mongo_uri, "REDIS_URL": redis_url},
            capture_output=True,
            text=True,
            check=False,
        )
        result = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        if out.returncode != 0 or "load_docs_per_s" not in result:
            print(f"{peer}: failed\n{out.stderr[-2000:]}")
            continue
        load, reindex = float(result["load_docs_per_s"]), float(result["reindex_docs_per_s"])
        print(
            f"{peer:<11} load {load:>8.1f} docs/s (ours {ours / load:.1f}x)   unchanged re-index "
            f"{reindex:>8.1f} docs/s (ours: tick {ours_tick / reindex:.0f}x, "
            f"sweep {ours_sweep / reindex:.2f}x)   "
            f"{result.get('note', '')}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
