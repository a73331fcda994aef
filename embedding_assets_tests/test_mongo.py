import pytest

from embedding_assets.dev.harness import load_sample
from embedding_assets.lib.sharding import shard_of
from embedding_assets.sources.mongo import MongoDocumentSource

pytestmark = pytest.mark.servers


def test_scan_route_and_fetch_by_id_route_agree(pipeline_env, monkeypatch):
    docs = load_sample(pipeline_env, 200, [{"title": "no id"}])
    source = MongoDocumentSource(pipeline_env["MONGO_URI"], pipeline_env["MONGO_DB"], "documents")
    source.ensure_indexes()
    assert source.count() == 201

    # all shards: one scan, every document once
    every = list(source.iter_shards(range(16), 16))
    assert len(every) == 201
    assert all(s == shard_of(d["doc_id"], 16) for s, d in every if "doc_id" in d)

    # one shard: ids first, then only that shard's documents are fetched
    fetched: list[int] = []
    real = source.iter_by_ids

    def spy(ids):
        fetched.append(len(ids))
        return real(ids)

    monkeypatch.setattr(source, "iter_by_ids", spy)
    one = list(source.iter_shards([3], 16))
    mine = sorted(d["doc_id"] for d in docs if "doc_id" in d and shard_of(d["doc_id"], 16) == 3)
    assert sorted(d["doc_id"] for _, d in one) == mine
    assert fetched == [len(mine)]
    assert {s for s, _ in one} == {3}
