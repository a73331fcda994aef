"""Retrieval quality on real translated text, through the real pipeline and the read API.

    python -m benchmarks.quality                                 # transformer and static tiers
    python -m benchmarks.quality --tiers transformer,static,remote   # + Infinity serving the model
    python -m benchmarks.quality --tiers transformer@fp32,transformer@openvino-bf16,transformer@onnx-int8
                                   # the default model through each runtime (lib/runtimes.py labels)

Builds the Debian manual-page set (benchmarks/manpages.py: 16 languages, same-language and
English queries, one relevant page per query), loads it into MongoDB, runs the pipeline into
Redis for each tier (one version each), and queries through ``EmbeddingClient``:

- BM25 (bm25s over the whole page; words, and character bigrams for Chinese and Japanese);
- dense: ``embed_query`` against every stored vector of the language searched;
- BM25 top-100 re-ranked by ``rerank`` with each fusion (cosine, rrf, linear);
- the stored codecs against float32 vectors of the same model (the pipeline's own pooled
  vectors from its shard state): int8 as stored and decoded by the client, and binary.

Prints R@10, MRR@10 and R@100 over all queries and per language, the tiers' encode speeds and
``embed_query`` p50. Servers come from MONGO_URI / REDIS_URL, or are embedded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import manpages

K = 10
DEPTH = 100
# Candidates per query in the second view: the relevant page and 68 others of its language, drawn
# once per query with a fixed seed. Issue 17's first measurement had 966 pages in 14 languages (69
# a language); this set has 100-160 a language, which is harder for every method.
POOL = 69
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; runs of CJK characters as character bigrams (they have no spaces)."""
    tokens: list[str] = []
    for word in _WORD.findall(text.casefold()):
        if _CJK.search(word):
            chars = [c for c in word if _CJK.match(c)]
            tokens += [a + b for a, b in itertools.pairwise(chars)] or chars
            rest = _CJK.sub(" ", word).split()
            tokens += rest
        else:
            tokens.append(word)
    return tokens


@dataclass
class Scores:
    """Per query: rank of the relevant document (1-based), None when not in the top DEPTH."""

    ranks: dict[tuple[str, str], list[int | None]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, language: str, rank: int | None) -> None:
        self.ranks[(kind, language)].append(rank)

    def summary(self, kind: str, language: str | None = None) -> tuple[float, float, float, int]:
        ranks = [
            r for (k, lang), rs in self.ranks.items() if k == kind and language in (None, lang) for r in rs
        ]
        if not ranks:
            return (float("nan"),) * 3 + (0,)  # type: ignore[return-value]
        r10 = sum(r is not None and r <= K for r in ranks) / len(ranks)
        mrr = sum(1 / r for r in ranks if r is not None and r <= K) / len(ranks)
        r100 = sum(r is not None and r <= DEPTH for r in ranks) / len(ranks)
        return r10, mrr, r100, len(ranks)


def rank_of(ids: Sequence[str], relevant: str) -> int | None:
    try:
        return list(ids[:DEPTH]).index(relevant) + 1
    except ValueError:
        return None


class Bm25Index:
    """One BM25 index per language: a query runs against its language's documents."""

    def __init__(self, documents: list[dict]) -> None:
        import bm25s

        by_language: dict[str, list[dict]] = defaultdict(list)
        for d in documents:
            by_language[d["language"]].append(d)
        self.ids: dict[str, list[str]] = {}
        self.retrievers: dict[str, object] = {}
        for language, docs in by_language.items():
            retriever = bm25s.BM25()
            retriever.index([tokenize(d["title"] + "\n" + d["body"]) for d in docs], show_progress=False)
            self.ids[language] = [d["doc_id"] for d in docs]
            self.retrievers[language] = retriever

    def search(self, language: str, text: str, k: int = DEPTH) -> tuple[list[str], list[float]]:
        ids = self.ids[language]
        tokens = tokenize(text) or ["\x00"]
        found, scores = self.retrievers[language].retrieve(  # type: ignore[attr-defined]
            [tokens], k=min(k, len(ids)), show_progress=False
        )
        keep = [(ids[i], float(s)) for i, s in zip(found[0], scores[0], strict=True) if s > 0]
        return [i for i, _ in keep], [s for _, s in keep]


def dense_ranking(query: np.ndarray, ids: list[str], matrix: np.ndarray, depth: int = DEPTH) -> list[str]:
    from embedding_assets.lib.ranking import cosines

    scores = cosines(query, matrix)
    top = np.argsort(-scores, kind="stable")[:depth]
    return [ids[i] for i in top]


def candidate_pools(queries: list[dict], documents: list[dict], size: int = POOL) -> list[set[str]]:
    """Per query: its relevant page and ``size - 1`` others of its language, seeded."""
    import random

    by_language: dict[str, list[str]] = defaultdict(list)
    for d in documents:
        by_language[d["language"]].append(d["doc_id"])
    rng = random.Random(7)
    pools = []
    for q in queries:
        others = [i for i in by_language[q["language"]] if i != q["doc"]]
        pools.append({q["doc"], *rng.sample(others, min(size - 1, len(others)))})
    return pools


def within(ranking: Sequence[str], pool: set[str]) -> list[str]:
    return [i for i in ranking if i in pool]


@dataclass
class TierResult:
    tier: str
    version: str
    embed_seconds: float
    documents: int
    query_ms: list[float]
    scores: dict[str, Scores]
    precision: str = ""  # the version's runtime and precision label (lib/runtimes.py)
    fingerprint: str = ""


def evaluate(
    tier: str,
    client: object,
    dataset: dict,
    bm25: Bm25Index,
    float_vectors: dict[str, np.ndarray],
    queries: list[dict],
    fusions: Sequence[str] = ("cosine", "rrf", "linear"),
) -> tuple[dict[str, Scores], list[float]]:
    """Every method's rank of the relevant page for every query, through the client."""
    from embedding_assets.lib import quantization as q

    by_language: dict[str, list[str]] = defaultdict(list)
    for d in dataset["documents"]:
        by_language[d["language"]].append(d["doc_id"])
    stored: dict[str, tuple[list[str], np.ndarray]] = {}
    floats: dict[str, tuple[list[str], np.ndarray]] = {}
    binary: dict[str, tuple[list[str], np.ndarray]] = {}
    for language, ids in by_language.items():
        entries = client.get_many(ids)  # type: ignore[attr-defined]
        kept = [i for i, e in zip(ids, entries, strict=True) if e is not None]
        stored[language] = (kept, np.stack([e.vector for e in entries if e is not None]))
        with_float = [i for i in ids if i in float_vectors]
        matrix = np.stack([float_vectors[i] for i in with_float])
        floats[language] = (with_float, matrix)
        dim = matrix.shape[1]
        binary[language] = (with_float, q.dequantize_binary(q.quantize_binary(matrix), dim))
    scores: dict[str, Scores] = defaultdict(Scores)
    query_ms: list[float] = []
    pools = candidate_pools(queries, dataset["documents"])
    for query, pool in zip(queries, pools, strict=True):
        language, kind, relevant = query["language"], query["kind"], query["doc"]
        started = time.perf_counter()
        vector = client.embed_query(query["text"])  # type: ignore[attr-defined]
        query_ms.append((time.perf_counter() - started) * 1000)
        every, _ = bm25.search(language, query["text"], k=len(by_language[language]))
        scores[f"BM25, {POOL} candidates"].add(kind, language, rank_of(within(every, pool), relevant))
        kept, matrix = stored[language]
        everything = dense_ranking(vector.vector, kept, matrix, depth=len(kept))
        scores[f"dense (int8, stored), {POOL} candidates"].add(
            kind, language, rank_of(within(everything, pool), relevant)
        )
        ids, bm25_scores = bm25.search(language, query["text"])
        scores["BM25"].add(kind, language, rank_of(ids, relevant))
        for label, (vids, matrix) in (
            ("dense (int8, stored)", stored[language]),
            ("dense (float32)", floats[language]),
            ("dense (binary)", binary[language]),
        ):
            scores[label].add(kind, language, rank_of(dense_ranking(vector.vector, vids, matrix), relevant))
        for fusion in fusions:
            ranking = client.rerank(vector, ids, first_stage_scores=bm25_scores, fusion=fusion)  # type: ignore[attr-defined]
            reranked = ranking.ids() + ranking.missing  # candidates without an entry keep their place last
            scores[f"BM25 top-100 -> rerank {fusion}"].add(kind, language, rank_of(reranked, relevant))
    return scores, query_ms


def float_vectors_of(parquet_dir: Path) -> dict[str, np.ndarray]:
    """The pipeline's own pooled float32 vectors, from its shard state (before quantization)."""
    import polars as pl

    out: dict[str, np.ndarray] = {}
    for path in sorted((parquet_dir / "document_vectors").glob("shard-*.parquet")):
        frame = pl.read_parquet(path, columns=["doc_id", "vector"])
        vectors = frame["vector"].to_numpy().astype(np.float32)
        for doc_id, vector in zip(frame["doc_id"].to_list(), vectors, strict=True):
            out[doc_id] = vector / max(float(np.linalg.norm(vector)), 1e-12)
    return out


def load(collection: object, dataset: dict) -> None:
    from embedding_assets.dev import corpus

    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    docs = [{**d, "indexed_at": when, "modified_at": when} for d in dataset["documents"]]
    collection.drop()  # type: ignore[attr-defined]
    corpus.load_into(collection, docs)
    collection.create_index("doc_id")  # type: ignore[attr-defined]
    collection.create_index([("modified_at", 1), ("doc_id", 1)])  # type: ignore[attr-defined]


def run_tier(
    tier: str,
    state: Path,
    redis_url: str,
    env: dict[str, str],
    dataset: dict,
    bm25: Bm25Index,
    queries: list[dict],
) -> TierResult:
    from embedding_assets.client import EmbeddingClient
    from embedding_assets.dev import harness

    parquet = state / f"parquet-{tier}"
    os.environ.update({**env, "EA_PARQUET_DIR": str(parquet)})
    started = time.perf_counter()
    result = harness.materialize()
    seconds = time.perf_counter() - started
    meta = harness.metadata(result, "feature_store_entries")
    version = str(meta["version"])
    embedded = harness.metadata(result, "document_vectors")
    print(
        f"{tier}: version {version}, {int(meta['rows'])} entries, run {seconds:.0f} s, "
        f"embedding step {embedded['documents_per_second']} docs/s",
        flush=True,
    )
    client = EmbeddingClient.from_url(redis_url, version)
    spec = client.spec
    assert spec is not None
    print(
        f"{tier}: {spec.window_tokens}-token windows, {spec.pooling} pooling, "
        f"{spec.max_chars} characters at most, {embedded.get('chunks', '?')} chunks",
        flush=True,
    )
    scores, query_ms = evaluate(tier, client, dataset, bm25, float_vectors_of(parquet), queries)
    return TierResult(
        tier, version, seconds, int(meta["rows"]), query_ms, scores, spec.precision, spec.model_fingerprint
    )


def print_tables(results: list[TierResult], out: Callable[[str], None] = print) -> None:
    kinds = (("same", "same-language"), ("cross", "cross-lingual (English query)"))
    out(
        "\n| tier | method | same R@10 | same MRR@10 | same R@100 | cross R@10 | cross MRR@10 | cross R@100 |"
    )
    out("| --- | --- | --- | --- | --- | --- | --- | --- |")
    lexical = ("BM25", f"BM25, {POOL} candidates")
    for result in results:
        # the whole language's pages first, then the smaller pools
        for method, scores in sorted(result.scores.items(), key=lambda kv: kv[0].endswith("candidates")):
            if method in lexical and result is not results[0]:
                continue
            cells = []
            for kind, _ in kinds:
                r10, mrr, r100, _ = scores.summary(kind)
                cells += [f"{r10:.3f}", f"{mrr:.3f}", f"{r100:.3f}"]
            out(f"| {result.tier if method not in lexical else '-'} | {method} | " + " | ".join(cells) + " |")
    first = results[0]
    languages = sorted({lang for (_, lang) in first.scores["BM25"].ranks})
    headline = [
        m for m in ("BM25", "dense (int8, stored)", "BM25 top-100 -> rerank cosine") if m in first.scores
    ]
    for kind, label in kinds:
        out(
            f"\nPer language, {label}, R@10 ({first.tier} tier"
            + "".join(f"; {r.tier}" for r in results[1:])
            + "):"
        )
        out(
            "| language | queries | "
            + " | ".join(headline)
            + "".join(f" | {r.tier} dense" for r in results[1:])
            + " |"
        )
        out("| --- | --- |" + " --- |" * (len(headline) + len(results) - 1))
        for language in languages:
            n = first.scores["BM25"].summary(kind, language)[3]
            if not n:
                continue
            cells = [f"{first.scores[m].summary(kind, language)[0]:.3f}" for m in headline]
            cells += [
                f"{r.scores['dense (int8, stored)'].summary(kind, language)[0]:.3f}" for r in results[1:]
            ]
            out(f"| {language} | {n} | " + " | ".join(cells) + " |")
    out("\n| tier | version | documents | run s | embed_query p50 ms | p95 ms |")
    out("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        p50 = statistics.median(r.query_ms)
        p95 = float(np.percentile(r.query_ms, 95))
        out(f"| {r.tier} | {r.version} | {r.documents} | {r.embed_seconds:.0f} | {p50:.1f} | {p95:.1f} |")
    best = first.scores
    for label, method in (("int8", "dense (int8, stored)"), ("binary", "dense (binary)")):
        for kind, name in kinds:
            loss = best["dense (float32)"].summary(kind)[0] - best[method].summary(kind)[0]
            out(f"{label} loss against float32, {name}, R@10: {loss:+.4f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiers", default="transformer,static", help="comma-separated: transformer, static, remote"
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        default=0,
        help="EA_MAX_CHARS of the runs (0: the setting's own; BM25 reads whole pages)",
    )
    parser.add_argument("--queries", type=int, default=0, help="a seeded sample of queries (0: all)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "embedding-assets" / "quality"))
    parser.add_argument("--infinity-venv", default="", help="default: EA_INFINITY_VENV or the machine's")
    parser.add_argument(
        "--record",
        action="store_true",
        help="keep each transformer runtime's R@10 in the model cache, where EA_RUNTIME=auto reads "
        "which int8 runtimes rank within 0.005 of torch fp32 (needs a transformer@fp32 tier)",
    )
    args = parser.parse_args(argv)
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]

    dataset = manpages.build(Path(args.cache))
    print(manpages.describe(dataset), flush=True)
    queries = dataset["queries"]
    if args.queries:
        import random

        queries = random.Random(7).sample(queries, min(args.queries, len(queries)))
    bm25 = Bm25Index(dataset["documents"])
    state = Path(tempfile.mkdtemp(prefix="ea-quality-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base_env = {
        "MONGO_DB": "ea_quality",
        "MONGO_COLLECTION": "documents",
        "EA_DEVICE": "cpu",
        # distilled once per machine, not once per run
        "EA_STATIC_DIR": os.environ.get("EA_STATIC_DIR") or str(Path(args.cache).parent / "static"),
    }
    if args.max_chars:
        base_env["EA_MAX_CHARS"] = str(args.max_chars)
    from embedding_assets.dev.harness import collection
    from embedding_assets.dev.servers import EmbeddedServers

    results: list[TierResult] = []
    with EmbeddedServers(state) as servers:
        os.environ.update({**servers.env, **base_env})
        load(collection(dict(os.environ)), dataset)
        for tier in tiers:
            backend, _, runtime = tier.partition("@")  # transformer@onnx-int8: one runtime's vectors
            env = {"EA_BACKEND": backend, "EA_RUNTIME": "auto", "EA_PRECISION": "auto"}
            if runtime:
                from embedding_assets.lib.runtimes import parse_label

                choice = parse_label(runtime)
                env |= {"EA_RUNTIME": choice.runtime, "EA_PRECISION": choice.precision}
            if tier == "remote":
                from embedding_assets.dev.infinity import InfinityServer, default_venv
                from embedding_assets.embedders.packaged import resolve

                folder = resolve(os.environ.get("EA_MODEL") or None)
                venv = Path(args.infinity_venv) if args.infinity_venv else default_venv()
                with InfinityServer(venv, log=state / "infinity.log", model=folder) as infinity:
                    env |= {"EA_EMBED_URLS": infinity.url, "EA_EMBED_MODEL": infinity.served_model}
                    results.append(run_tier(tier, state, servers.redis_url, env, dataset, bm25, queries))  # type: ignore[arg-type]
            else:
                results.append(run_tier(tier, state, servers.redis_url, env, dataset, bm25, queries))  # type: ignore[arg-type]
            print_tables(results)  # after each tier: a later one failing loses nothing
    if args.record:
        record_runtimes(results)
    return 0


def record_runtimes(results: list[TierResult]) -> None:
    """R@10 of each transformer runtime's stored vectors, by its label, for ``EA_RUNTIME=auto``."""
    import json

    from embedding_assets.embedders.runtime_choice import quality_record
    from embedding_assets.lib.runtimes import admitted, parse_label

    by_model: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        if not r.tier.startswith("transformer") or "dense (int8, stored)" not in r.scores:
            continue
        dense = r.scores["dense (int8, stored)"]
        by_model.setdefault(r.fingerprint, {})[r.precision] = {
            kind: round(dense.summary(kind)[0], 4) for kind in ("same", "cross")
        }
    for fingerprint, quality in by_model.items():
        path = quality_record(fingerprint)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(quality, indent=1, sort_keys=True) + "\n")
        verdicts = {label: admitted(quality, parse_label(label)) for label in quality if label != "fp32"}
        print(
            f"recorded in {path}: "
            + ", ".join(f"{k} {'admitted' if v else 'not admitted'}" for k, v in verdicts.items())
        )


if __name__ == "__main__":
    sys.exit(main())
