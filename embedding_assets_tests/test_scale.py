"""100,000 documents through the static tier, on the real servers, as CI runs it.

Behaviour at scale, not speed (benchmarks/ measures that): every document gets exactly its
entry, shards stream through the spool, the checks pass, an unchanged sweep redoes nothing,
and the store stays inside its memory budget.
"""

import itertools
import random
from pathlib import Path

import numpy as np
import pytest

from embedding_assets.client import EmbeddingClient
from embedding_assets.dev import corpus
from embedding_assets.dev.harness import check_results, collection, materialize, metadata
from embedding_assets.embedders.static import StaticEmbedder
from embedding_assets.lib.text import embeddable_text
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.large]

N = 100_000


def test_a_hundred_thousand_documents_on_the_static_tier(pipeline_env, monkeypatch, static_dir):
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    coll = collection(pipeline_env)
    sample = sorted(random.Random(5).sample(range(N), 200))
    wanted, by_index = set(sample), {}
    docs = enumerate(corpus.generate_documents(N, mean_sentences=20))
    while batch := list(itertools.islice(docs, 10_000)):
        by_index |= {i: dict(d) for i, d in batch if i in wanted}  # before insert_many adds _id
        coll.insert_many([d for _, d in batch], ordered=False)
    coll.create_index("doc_id")

    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    memory_before = store.used_memory()
    result = materialize()
    assert result.success
    assert all(c.passed for c in check_results(result).values())
    assert metadata(result, "document_snapshots")["rows"] == N
    assert metadata(result, "document_vectors")["embedded"] == N
    assert metadata(result, "feature_store_entries")["written"] == N
    assert metadata(result, "feature_store_entries")["bucket_encoding"] == "listpack"
    # 256-dimension int8 records: 284 B each; the layout keeps the overhead small
    assert (store.used_memory() - memory_before) / N < 340

    client = EmbeddingClient(store)
    assert len(set(store.entries.scan_ids(client.version))) == N
    texts = [
        embeddable_text(by_index[i]["title"], by_index[i]["body"], title_repeat=2, max_chars=200_000).text
        for i in sample
    ]
    # the pipeline's defaults: lead pooling over blocks of 128 tokens
    direct = StaticEmbedder(None, cache_dir=Path(static_dir), pooling="lead", window=128).encode(texts)
    entries = client.get_many([f"doc-{i:06d}" for i in sample])
    assert all(e is not None for e in entries)
    stored = np.stack([e.vector for e in entries])
    cosines = np.einsum("ij,ij->i", stored, direct) / np.linalg.norm(stored, axis=1)
    assert cosines.min() > 0.99  # int8 codes of exactly these texts' vectors

    again = materialize()
    assert again.success
    assert metadata(again, "chunked_text")["reused"] == N
    assert metadata(again, "document_vectors")["embedded"] == 0
    assert metadata(again, "feature_store_entries")["written"] == 0
