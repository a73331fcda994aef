"""The asset graph end to end on real servers, checked against an independent computation."""

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import redis

from embedding_assets.client import EmbeddingClient
from embedding_assets.dev.harness import ALL_KEYS, collection, load_sample, materialize, metadata
from embedding_assets.lib import codec
from embedding_assets.lib.chunking import chunk_texts
from embedding_assets.lib.sharding import shard_of
from embedding_assets.lib.text import content_hash, embeddable_text
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]

ODD = [
    {"doc_id": "odd-empty", "title": "", "body": "  \n "},
    {"doc_id": "odd-none", "title": None},
    {"doc_id": "odd-number", "title": 7, "body": ["not", "text"]},
    {"title": "no doc id at all", "body": "lost?"},
    {"doc_id": "title-only", "title": "Only a title, no body"},
]


def _expected_vector(model, text: str, spec, decay: float = 0.3) -> np.ndarray:
    """Direct SentenceTransformer.encode of the chunks, with the document prompt of the model's own
    configuration, pooled by hand: token counts, times ``decay`` per window after the first
    (0.3: ``lead``, the default; 1.0: the plain token-weighted mean)."""
    [chunks] = chunk_texts([text], model.tokenizer, window=spec.window_tokens, overlap=spec.overlap_tokens)
    chunks = chunks[:6]  # 0.3**6 < 1e-3: later windows are not embedded
    vectors = model.encode(
        [c.text for c in chunks], convert_to_numpy=True, prompt=model.prompts.get("document")
    )
    assert spec.pooling == "lead"  # the default
    total = np.zeros(vectors.shape[1], dtype=np.float64)
    for i, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True)):
        total += chunk.n_tokens * decay**i * vector
    return total / np.linalg.norm(total)


def test_backfill_of_all_shards_embeds_every_document(pipeline_env, embedder):
    docs = load_sample(pipeline_env, 120, ODD)
    # a long document whose opening and tail differ, so pooling over several chunks is exercised
    long_doc = {
        "doc_id": "long",
        "title": "Long",
        "body": "Sourdough bread rises with a starter of flour and water, fed every day. "
        + " ".join(f"Option --cache-{i} sets the size of cache {i} in megabytes." for i in range(200)),
    }
    collection(pipeline_env).insert_one(long_doc)
    docs.append(long_doc)

    result = materialize()
    assert result.success

    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    client = EmbeddingClient(store)
    spec = store.control.versions()[client.version]
    assert spec.dimension == 384 and spec.quantization == "int8"
    model = embedder.model
    skipped = {"odd-empty", "odd-none", "odd-number", None}
    checked = 0
    for doc in docs:
        if doc.get("doc_id") in skipped:
            continue
        entry = client.get(doc["doc_id"])
        assert entry is not None, doc["doc_id"]
        assert entry.vector.shape == (384,) and entry.vector.dtype == np.float32
        assert entry.version == client.version
        title = doc.get("title") if isinstance(doc.get("title"), str) else None
        body = doc.get("body") if isinstance(doc.get("body"), str) else None
        text = embeddable_text(title, body, title_repeat=spec.title_repeat, max_chars=spec.max_chars).text
        assert entry.content_hash == content_hash(text, client.version)
        expected = _expected_vector(model, text, spec)
        cosine = float(entry.vector @ expected / np.linalg.norm(entry.vector))
        assert cosine >= 0.99, (doc["doc_id"], cosine)
        if doc["doc_id"] == "long":  # the opening counts most: not the plain mean of its windows
            mean = _expected_vector(model, text, spec, decay=1.0)
            assert float(entry.vector @ mean / np.linalg.norm(entry.vector)) < cosine - 0.01
        checked += 1
    assert checked == len(docs) - 4

    # documents without text are reported with their reasons and have no entry
    chunks_meta = metadata(result, "chunked_text")
    assert chunks_meta["skipped"] == 4
    for doc_id in ("odd-empty", "odd-none", "odd-number"):
        assert client.get(doc_id) is None
        assert doc_id in chunks_meta["skip_reasons"]
    assert "missing doc_id" in chunks_meta["skip_reasons"]
    assert chunks_meta["failures"] == 4
    assert metadata(result, "document_vectors")["failures"] == 0
    assert metadata(result, "document_snapshots")["bytes_written"] > 0
    entries_meta = metadata(result, "feature_store_entries")
    assert entries_meta["failures"] == 0
    assert entries_meta["rows"] == checked
    assert entries_meta["bytes_written"] == checked * 412


def test_each_stored_shard_holds_exactly_its_documents(pipeline_env, tmp_path):
    docs = load_sample(pipeline_env, 80)
    assert materialize().success
    seen = []
    for key in ALL_KEYS:
        frame = pl.read_parquet(tmp_path / "parquet" / "document_snapshots" / f"{key}.parquet")
        shard = int(key.split("-")[1])
        assert all(shard_of(d, 16) == shard for d in frame["doc_id"])
        seen += frame["doc_id"].to_list()
        vectors = pl.read_parquet(tmp_path / "parquet" / "document_vectors" / f"{key}.parquet")
        assert vectors["doc_id"].to_list() == frame["doc_id"].to_list()
        multi = vectors.filter(pl.col("n_chunks") > 1)  # one chunk: the document vector, kept once
        assert (multi["n_chunks"] == multi["chunk_vectors"].list.len()).all()
        assert vectors.filter(pl.col("n_chunks") == 1)["chunk_vectors"].is_null().all()
    assert sorted(seen) == sorted(d["doc_id"] for d in docs)


def test_single_shard_run_touches_only_that_shard(pipeline_env):
    docs = load_sample(pipeline_env, 80)
    key = ALL_KEYS[5]
    result = materialize([key])
    assert result.success
    mine = {d["doc_id"] for d in docs if shard_of(d["doc_id"], 16) == 5}
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    assert set(store.entries.scan_ids(version)) == mine
    assert metadata(result, "document_snapshots")["rows"] == len(mine)


def test_calibration_is_fixed_once_per_version(pipeline_env):
    load_sample(pipeline_env, 80)
    assert materialize(ALL_KEYS[:2]).success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    first = store.control.calibration(version)
    ids = list(store.entries.scan_ids(version))
    before = store.entries.read(version, ids)

    assert materialize(ALL_KEYS[2:]).success  # other shards, other vectors
    assert store.control.calibration(version).to_bytes() == first.to_bytes()
    assert materialize(ALL_KEYS[:2]).success  # the same shards again
    after = store.entries.read(version, ids)
    for a, b in zip(before, after, strict=True):
        # identical codes and hashes; only computed_at may move
        assert a[codec.HEADER_SIZE :] == b[codec.HEADER_SIZE :]
        assert codec.decode_header(a).content_hash == codec.decode_header(b).content_hash


def test_a_new_setting_makes_a_new_version_beside_the_old(pipeline_env, monkeypatch):
    docs = load_sample(pipeline_env, 40)
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    first = store.control.active_version()

    monkeypatch.setenv("EA_QUANTIZATION", "binary")
    assert materialize().success
    versions = store.control.versions()
    assert len(versions) == 2
    second = next(v for v in versions if v != first)
    assert store.control.active_version() == first  # switching is explicit
    for doc in docs:
        assert store.entries.read_one(first, doc["doc_id"]) and store.entries.read_one(second, doc["doc_id"])
    binary = EmbeddingClient(store, second).get(docs[0]["doc_id"])
    exact = EmbeddingClient(store, first).get(docs[0]["doc_id"])
    assert len(store.entries.read_one(second, docs[0]["doc_id"])) == codec.HEADER_SIZE + 48
    assert float(binary.vector @ exact.vector) / np.linalg.norm(exact.vector) > 0.6


def test_entries_expire(pipeline_env, monkeypatch):
    docs = load_sample(pipeline_env, 20)
    monkeypatch.setenv("EA_TTL_SECONDS", "3600")
    assert materialize().success
    raw = redis.Redis.from_url(pipeline_env["REDIS_URL"])
    version = FeatureStore(raw).control.active_version()
    ttl = FeatureStore(raw).entries.entry_ttl(version, docs[0]["doc_id"])
    assert 3500 < ttl <= 3600


def test_static_tier_fills_its_own_version(pipeline_env, monkeypatch, static_dir):
    docs = load_sample(pipeline_env, 112)  # 14 languages x 4 topics, twice
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    result = materialize()
    assert result.success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    client = EmbeddingClient(store)
    spec = store.control.versions()[client.version]
    assert spec.model.startswith("static-") and spec.dimension == 256
    assert (spec.window_tokens, spec.pooling) == (128, "lead")  # blocks of tokens weighted, not windows
    entries = client.get_many([d["doc_id"] for d in docs])
    assert all(e is not None and e.vector.shape == (256,) for e in entries)
    assert metadata(result, "document_vectors")["chunks"] == len(docs)
    # same language and topic are nearest: documents i and i + 56 share both
    matrix = np.stack([e.vector for e in entries])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    sims = matrix @ matrix.T
    np.fill_diagonal(sims, -1)
    twins = sum(int(np.argmax(sims[i]) % 56 == i % 56) for i in range(len(docs)))
    assert twins / len(docs) > 0.8

    # queries on the static tier: its own token table, no torch in the reading process
    out = subprocess.run(
        [sys.executable, "-c", STATIC_QUERY, pipeline_env["REDIS_URL"], docs[0]["doc_id"]],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "EA_STATIC_DIR": static_dir},
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"torch": False, "dimension": 256, "top_is_same_topic": True}, out.stderr[-2000:]


STATIC_QUERY = """
import json, sys
from embedding_assets.client import EmbeddingClient
from embedding_assets.dev import corpus
client = EmbeddingClient.from_url(sys.argv[1])
doc = next(corpus.generate_documents(1))
query = client.embed_query(doc["title"])
ids = [d["doc_id"] for d in corpus.generate_documents(112)]
topic = {d["doc_id"]: d["topic"] for d in corpus.generate_documents(112)}
best = client.rerank(query, ids)[0][0]
print(json.dumps({"torch": "torch" in sys.modules, "dimension": int(query.vector.shape[0]),
                  "top_is_same_topic": topic[best] == doc["topic"]}))
"""


def test_a_first_fill_scans_for_orphans_only_once_the_version_has_entries(
    pipeline_env, monkeypatch, static_dir
):
    """A full run into a version with no key writes what it read and has no entry of a deletion
    nobody saw: it skips the scan of every stored id. The next full run scans, and removes what
    was deleted while nothing watched."""
    from embedding_assets.dev.harness import ground_truth, store_state
    from embedding_assets.stores.redis_entries import RedisEntryStore

    docs = load_sample(pipeline_env, 40)
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    scans: list[str] = []
    real = RedisEntryStore.scan_ids

    def counted(self, version, *args, **kwargs):
        scans.append(version)
        return real(self, version, *args, **kwargs)

    monkeypatch.setattr(RedisEntryStore, "scan_ids", counted)
    first = materialize()
    assert first.success and scans == []
    assert metadata(first, "feature_store_entries")["written"] == len(docs)
    coll = collection(pipeline_env)
    unseen = [docs[3]["doc_id"], docs[17]["doc_id"]]
    coll.delete_many({"doc_id": {"$in": unseen}})  # no sensor runs: nobody sees these deletions
    second = materialize()
    assert second.success and len(scans) == 1
    assert metadata(second, "feature_store_entries")["deleted"] == 2
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    state = store_state(store, version)
    assert not set(unseen) & set(state)
    assert state == ground_truth(coll, store.control.versions()[version])
