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


def test_a_sample_is_spread_over_the_collection_without_reading_it_whole(pipeline_env):
    import pymongo

    coll = pymongo.MongoClient(pipeline_env["MONGO_URI"])[pipeline_env["MONGO_DB"]]["documents"]
    coll.insert_many([{"doc_id": f"d{i:04d}", "body": "x"} for i in range(1000)])
    source = MongoDocumentSource(pipeline_env["MONGO_URI"], pipeline_env["MONGO_DB"], "documents")
    sample = source.sample_documents(100, seed=1)
    ranks = sorted(int(d["doc_id"][1:]) for d in sample)
    assert len(ranks) == len(set(ranks)) == 100  # distinct documents
    assert ranks[0] < 200 and ranks[-1] > 800  # from all over, not one end
    assert len({r // 100 for r in ranks}) >= 8  # most tenths of the collection are drawn from
    assert len(source.sample_documents(5000, seed=2)) == 1000  # a sample larger than the collection: all
