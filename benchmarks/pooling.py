"""Windows and pooling, chosen on half the manual pages and reported on the other half.

    python -m benchmarks.pooling                      # windows 64,128,256,500; overlap 32
    python -m benchmarks.pooling --windows 128 --overlap 0

The default model embeds every page of the Debian manual-page set (benchmarks/manpages.py) with
the pipeline's own text rule, chunker and encoder, once per window size (the first
``--max-windows`` windows of each page, cached); chunk vectors are then pooled by each rule:
``mean`` (by tokens), ``lead:<r>`` for several r, and ``first`` (the first window alone). Two
multi-vector rules score a page without pooling, as a store holding every window's vector would:
``max`` (the page's best window) and ``max+lead:0.3`` (the mean of that and the pooled score). Pages are
split in two halves by a hash of their name: the rule is chosen on the "dev" half and its R@10 on
the "test" half is the figure that was not tuned on. Queries run against every page of their
language, as in benchmarks.quality; this is the model alone, no Redis or Dagster (the quality
benchmark measures the chosen rule through the whole pipeline).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks import manpages
from benchmarks.quality import K

RULES = ("mean", "lead:0.7", "lead:0.5", "lead:0.3", "lead:0.1", "first")
MULTI_VECTOR_RULES = ("max", "max+lead:0.3")


def half(doc_id: str) -> str:
    """'dev' or 'test', the same for every language of a page."""
    digest = hashlib.blake2b(doc_id.rsplit(".", 1)[0].encode(), digest_size=2).digest()
    return "dev" if digest[0] % 2 == 0 else "test"


def pooled(vectors: np.ndarray, tokens: np.ndarray, counts: np.ndarray, rule: str) -> np.ndarray:
    from embedding_assets.lib.pooling import chunk_weights, pool_documents

    owner = np.repeat(np.arange(len(counts)), counts)
    if rule == "first":
        starts = np.cumsum(counts) - counts
        weights = np.zeros(len(tokens))
        weights[starts[counts > 0]] = 1.0
    else:
        weights = chunk_weights(tokens, counts, rule)
    return pool_documents(vectors, weights, owner, len(counts))


def recall(documents: list[dict], queries: list[dict], qvecs: np.ndarray, matrix: np.ndarray) -> dict:
    """R@10 per (kind, half) and per kind over all queries, one pooled vector a page."""
    return recall_scored(documents, queries, qvecs, lambda vector: matrix @ vector)


def max_window_scorer(
    vectors: np.ndarray, counts: np.ndarray, pooled_matrix: np.ndarray | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """A page's score as its best window's cosine; with ``pooled_matrix``, the mean of that and
    the pooled vector's cosine."""
    owner = np.repeat(np.arange(len(counts)), counts)

    def score(vector: np.ndarray) -> np.ndarray:
        best = np.full(len(counts), -np.inf)
        np.maximum.at(best, owner, vectors @ vector)
        return best if pooled_matrix is None else (best + pooled_matrix @ vector) / 2

    return score


def recall_scored(
    documents: list[dict],
    queries: list[dict],
    qvecs: np.ndarray,
    score: Callable[[np.ndarray], np.ndarray],
) -> dict:
    """R@10 per (kind, half) and per kind, pages scored by ``score(query vector)``."""
    by_language: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(documents):
        by_language[d["language"]].append(i)
    index = {d["doc_id"]: i for i, d in enumerate(documents)}
    hits: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for q, vector in zip(queries, qvecs, strict=True):
        candidates = np.asarray(by_language[q["language"]])
        scores = score(vector)[candidates]
        top = candidates[np.argsort(-scores, kind="stable")[:K]]
        hit = index[q["doc"]] in top
        hits[(q["kind"], half(q["doc"]))].append(hit)
        hits[(q["kind"], "all")].append(hit)
    return {key: sum(v) / len(v) for key, v in hits.items()}


def chunk_vectors(
    embedder: object, texts: list[str], window: int, overlap: int, max_windows: int, cache: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from embedding_assets.lib.chunking import chunk_texts

    digest = hashlib.blake2b(  # the texts themselves: a set whose recipe changed is embedded again
        f"{embedder.fingerprint} {window} {overlap} {max_windows}".encode(),  # type: ignore[attr-defined]
        digest_size=6,
    )
    for text in texts:
        digest.update(text.encode())
    path = cache / f"pooling-{digest.hexdigest()}.npz"
    if path.exists():
        saved = np.load(path)
        return saved["vectors"], saved["tokens"], saved["counts"]
    chunked = chunk_texts(
        texts,
        embedder.tokenizer,  # type: ignore[attr-defined]
        window=window,
        overlap=min(overlap, window - 1),
        max_windows=max_windows,
    )
    flat = [c.text for doc in chunked for c in doc]
    tokens = np.array([c.n_tokens for doc in chunked for c in doc], dtype=np.float64)
    counts = np.array([len(doc) for doc in chunked])
    started = time.perf_counter()
    vectors = np.asarray(embedder.encode(flat, tokens.astype(int).tolist()), dtype=np.float32)  # type: ignore[attr-defined]
    print(
        f"  window {window}: {len(flat)} chunks embedded in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    np.savez(path, vectors=vectors, tokens=tokens, counts=counts)
    return vectors, tokens, counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--windows", default="64,128,256,500", help="window sizes in tokens")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--max-windows", type=int, default=8, help="windows embedded per page")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "embedding-assets" / "quality"))
    args = parser.parse_args(argv)

    from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder
    from embedding_assets.lib.text import embeddable_text

    cache = Path(args.cache)
    dataset = manpages.build(cache)
    print(manpages.describe(dataset), flush=True)
    documents, queries = dataset["documents"], dataset["queries"]
    embedder = SentenceTransformerEmbedder(None, device="cpu")
    texts = [embeddable_text(d["title"], d["body"]).text for d in documents]
    qvecs = np.asarray(embedder.encode_queries([q["text"] for q in queries]), dtype=np.float32)
    splits = defaultdict(int)
    for q in queries:
        splits[(q["kind"], half(q["doc"]))] += 1
    print(
        "queries: "
        + ", ".join(f"{kind} {part} {n}" for (kind, part), n in sorted(splits.items()))
        + f"; the first {args.max_windows} windows of each page, overlap {args.overlap}",
        flush=True,
    )
    rows = []
    for window in (int(w) for w in args.windows.split(",")):
        vectors, tokens, counts = chunk_vectors(
            embedder, texts, window, args.overlap, args.max_windows, cache
        )
        for rule in RULES:
            scores = recall(documents, queries, qvecs, pooled(vectors, tokens, counts, rule))
            rows.append((window, rule, scores))
        lead = pooled(vectors, tokens, counts, "lead:0.3")
        for rule, scorer in zip(
            MULTI_VECTOR_RULES,
            (max_window_scorer(vectors, counts), max_window_scorer(vectors, counts, lead)),
            strict=True,
        ):
            rows.append((window, rule, recall_scored(documents, queries, qvecs, scorer)))
    print("\n| window | pooling | dev same | dev cross | test same | test cross | all same | all cross |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for window, rule, s in rows:
        cells = [s[(kind, part)] for part in ("dev", "test", "all") for kind in ("same", "cross")]
        print(f"| {window} | {rule} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    ranked = sorted(rows, key=lambda r: -(r[2][("same", "dev")] + r[2][("cross", "dev")]))
    print("\nbest on dev (same + cross R@10), and the same rules on test:")
    for window, rule, s in ranked[:3]:
        print(
            f"  {window}-token windows, {rule}: dev {s[('same', 'dev')] + s[('cross', 'dev')]:.3f}; "
            f"test same {s[('same', 'test')]:.3f}, cross {s[('cross', 'test')]:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
