import polars as pl
import pytest

from embedding_assets.dev import corpus
from embedding_assets.dev.harness import load_sample
from embedding_assets.lib.sharding import shard_of
from embedding_assets.sources.mongo import MongoDocumentSource

pytestmark = pytest.mark.servers


def test_scan_route_and_fetch_by_id_route_agree(pipeline_env, monkeypatch):
    docs = load_sample(pipeline_env, 200, [{"title": "no id"}])
    source = MongoDocumentSource(pipeline_env["MONGO_URI"], pipeline_env["MONGO_DB"], "documents")
    corpus.ensure_indexes(source.collection)
    assert source.count() == 201

    # all shards: one scan, every document once
    requested: list[str] = []
    every = list(source.iter_shards(range(16), 16, requesting=lambda: requested.append("all")))
    assert len(every) == 201 and requested == ["all"]
    assert all(s == shard_of(d["doc_id"], 16) for s, d in every if "doc_id" in d)

    # one shard: ids first, then only that shard's documents are fetched
    fetched: list[int] = []
    real = source.iter_by_ids

    def spy(ids):
        fetched.append(len(ids))
        return real(ids)

    monkeypatch.setattr(source, "iter_by_ids", spy)
    one = list(source.iter_shards([3], 16, requesting=lambda: requested.append("ids")))
    mine = sorted(d["doc_id"] for d in docs if "doc_id" in d and shard_of(d["doc_id"], 16) == 3)
    assert sorted(d["doc_id"] for _, d in one) == mine
    assert fetched == [len(mine)] and requested == ["all", "ids"]  # the scan of ids asked once
    assert {s for s, _ in one} == {3}


def test_a_sample_is_spread_over_the_collection_with_every_copy_of_its_ids(pipeline_env):
    import pymongo

    coll = pymongo.MongoClient(pipeline_env["MONGO_URI"])[pipeline_env["MONGO_DB"]]["documents"]
    coll.insert_many([{"doc_id": f"d{i:04d}", "body": "x"} for i in range(1000)])
    coll.insert_many([{"doc_id": f"d{i:04d}", "body": "copy"} for i in range(0, 1000, 2)])  # duplicates
    source = MongoDocumentSource(pipeline_env["MONGO_URI"], pipeline_env["MONGO_DB"], "documents")
    coll.insert_one({"doc_id": "gone", "body": "x", "is_deleted": True})  # a tombstone
    drawn = source.sample_documents(150, seed=1)
    sample, population = drawn.documents, drawn.population
    assert population == 1501
    assert drawn.seen_live is not None and len(drawn.seen_live) == 1500  # every copy of every live id
    assert drawn.seen_live.seen(["d0000", "d0999", "gone", "never"]) == {"d0000", "d0999"}
    ids = [d["doc_id"] for d in sample]
    ranks = sorted({int(i[1:]) for i in ids if i != "gone"})
    assert len(ranks) + ("gone" in ids) == 150  # exactly 150 doc_ids (the 150 of smallest seeded hash)
    assert len({r // 100 for r in ranks}) == 10  # from every tenth of the collection
    for rank in ranks:  # a drawn doc_id comes with all its copies: duplicates resolve as in the pipeline
        assert ids.count(f"d{rank:04d}") == (2 if rank % 2 == 0 else 1)
    assert sample != source.sample_documents(150, seed=2).documents
    assert source.sample_documents(150, seed=1).documents == sample  # the seed decides the draw
    everything = source.sample_documents(5000, seed=2)
    assert (len(everything.documents), everything.population) == (1501, 1501)  # all of it


def test_threads_sharing_a_source_share_one_client():
    from concurrent.futures import ThreadPoolExecutor

    source = MongoDocumentSource("mongodb://127.0.0.1:1", "db", "documents", timeout_ms=100)
    try:
        with ThreadPoolExecutor(8) as pool:
            clients = list(pool.map(lambda _: source.client, range(64)))
        assert len({id(c) for c in clients}) == 1  # no client made and dropped unclosed
    finally:
        source.close()


def test_a_full_scan_of_secantusdb_is_read_in_large_pages(pipeline_env):
    """SecantusDB copies what is left of a result for every page it sends: in pages of 1,000 a scan of
    1M documents was quadratic (55-59 s, 43-48 s in pages of 10,000). Every document still comes once,
    in ``_id`` order."""
    import pymongo
    import pymongo.monitoring

    coll = pymongo.MongoClient(pipeline_env["MONGO_URI"])[pipeline_env["MONGO_DB"]]["documents"]
    # _ids given in order: the driver's ObjectIds are not (their 3-byte counter starts at random
    # and wraps, and one CI run drew a wrap 5,846 documents in)
    coll.insert_many([{"_id": i, "doc_id": f"d{i:05d}", "body": "x"} for i in range(12_500)])

    class Pages(pymongo.monitoring.CommandListener):
        def __init__(self) -> None:
            self.commands: list[str] = []

        def started(self, event: pymongo.monitoring.CommandStartedEvent) -> None:
            if event.command_name in ("find", "getMore"):
                self.commands.append(event.command_name)

        def succeeded(self, event: object) -> None:
            pass

        def failed(self, event: object) -> None:
            pass

    pages = Pages()
    source = MongoDocumentSource(pipeline_env["MONGO_URI"], pipeline_env["MONGO_DB"], "documents")
    source._new_client = lambda: pymongo.MongoClient(source.uri, tz_aware=True, event_listeners=[pages])
    if not source._is_secantus():
        pytest.skip("MongoDB streams its results: pages of EA_READ_BATCH cost it nothing more")
    assert source.scan_opening_seconds() is None  # no full scan of it in this process yet
    opened: list[list[str]] = []  # the pages asked for when the scan says it is open
    requesting: list[list[str]] = []  # ... and when it is about to ask for its first
    scan = source.scan_all(
        opened=lambda: opened.append(list(pages.commands)),
        requesting=lambda: requesting.append(list(pages.commands)),
    )
    ids = [d["doc_id"] for d in scan]
    assert ids == [f"d{i:05d}" for i in range(12_500)]
    assert pages.commands == ["find", "getMore"]  # 10,000, then the rest; not 13 pages of 1,000
    assert opened == [["find"]]  # once, with its first page read and nothing yielded yet
    assert requesting == [[]]  # once, before anything was asked for
    # what the server took to open it, for the embedding step's timing of the audit's sample
    opening = source.scan_opening_seconds()
    assert opening is not None and opening > 0
    list(source.scan_all({"doc_id": 1}))  # a projection is not a full scan: not timed
    assert source.scan_opening_seconds() == opening


def test_a_date_past_9999_reads_as_milliseconds_in_every_read_instead_of_failing_it(pipeline_env):
    """MongoDB holds any 64-bit count of milliseconds, and pymongo's default decoding fails a
    whole reply on a date past year 9999: the change sensor's query for future-dated documents
    failed at every tick, and a delta run's fetch of that document failed the run. The source's
    client decodes such a date as ``DatetimeMS`` and any other as an aware datetime. SecantusDB
    refuses to store one, so a reply is decoded here as the driver decodes the source's replies:
    with its collection's codec options."""
    import datetime as dt

    import bson
    from bson.codec_options import CodecOptions
    from bson.datetime_ms import DatetimeMS
    from bson.errors import InvalidBSON

    from embedding_assets.lib.change_tracking import future_digest
    from embedding_assets.lib.snapshot import snapshot_row

    docs = load_sample(pipeline_env, 5)
    source = MongoDocumentSource(pipeline_env["MONGO_URI"], pipeline_env["MONGO_DB"], "documents")
    year_10001 = DatetimeMS(253_402_300_800_000 + 366 * 86_400_000)
    indexed = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    raw = bson.encode(
        {
            "_id": bson.ObjectId(),
            "doc_id": "far",
            "title": "T",
            "body": "B",
            "modified_at": year_10001,
            "indexed_at": indexed,
        }
    )
    with pytest.raises(InvalidBSON, match="out of range"):  # how the source's reads decoded it before
        bson.decode(raw, codec_options=CodecOptions(tz_aware=True))
    doc = bson.decode(raw, codec_options=source.collection.codec_options)
    assert type(doc["modified_at"]) is DatetimeMS and int(doc["modified_at"]) == int(year_10001)
    assert doc["indexed_at"] == indexed and doc["indexed_at"].tzinfo is not None
    # the sensor follows it as a future-dated document; a delta run's row notes and ignores it
    digest = future_digest([doc])
    assert digest == future_digest([dict(doc)])
    assert digest != future_digest([{**doc, "modified_at": DatetimeMS(int(year_10001) + 1)}])
    row = snapshot_row(doc)
    assert row["modified_at"] is None and "modified_at is outside years 1-9999" in row["notes"]
    assert row["doc_id"] == "far" and row["indexed_at"] == 1_767_323_045_000
    # dates in range read from the server as they did: aware datetimes, in the sensor's queries too
    fetched = {d["doc_id"]: d for d in source.iter_by_ids([d["doc_id"] for d in docs])}
    assert len(fetched) == 5 and all(type(d["modified_at"]) is dt.datetime for d in fetched.values())
    assert all(d["modified_at"].tzinfo is not None for d in fetched.values())
    latest = source.latest_change(dt.datetime.now(dt.UTC) + dt.timedelta(days=3650))
    assert latest is not None and latest["modified_at"] == max(d["modified_at"] for d in fetched.values())


def test_a_scan_reads_dates_as_milliseconds_and_keys_date_ids_as_a_fetch_by_id_does(pipeline_env):
    """A full scan decodes dates as milliseconds (``DatetimeMS``): the snapshot it makes equals the
    one made from datetimes, and a date-typed ``doc_id`` or ``_id`` keeps the text the other reads
    give it. (SecantusDB refuses to store a date past year 9999, so that case is test_snapshot's.)"""
    import datetime as dt

    from bson.datetime_ms import DatetimeMS

    from embedding_assets.lib.identity import doc_key
    from embedding_assets.lib.snapshot import snapshot_frame

    load_sample(pipeline_env, 30)
    source = MongoDocumentSource(pipeline_env["MONGO_URI"], pipeline_env["MONGO_DB"], "documents")
    dated_id = dt.datetime(2024, 5, 6, 7, 8, 9, 123_000, tzinfo=dt.UTC)
    source.collection.insert_many(
        [
            {"_id": dated_id, "doc_id": "dated-source-id", "title": "T", "body": "B"},
            {"doc_id": dated_id, "title": "Dated id", "body": "Its doc_id is a date."},
            {"doc_id": "dated-title", "title": dated_id, "body": "Its title is a date."},
        ]
    )
    scanned = [d for _, d in source.iter_shards(range(16), 16)]
    assert len(scanned) == 33
    assert all(type(d["modified_at"]) is DatetimeMS for d in scanned if "modified_at" in d)
    # the same documents as the client's own reads decode them (dates as datetimes)
    other = {str(d["_id"]): d for d in source.collection.find()}
    for doc in scanned:
        twin = other[str(doc["_id"])]
        assert doc_key(doc["doc_id"]) == doc_key(twin["doc_id"]) and str(doc["_id"]) == str(twin["_id"])
    frame = snapshot_frame(scanned)
    assert frame.equals(snapshot_frame(other.values()))
    rows = {r["source_id"]: r for r in frame.iter_rows(named=True)}
    assert rows[str(dated_id)]["doc_id"] == "dated-source-id"
    refused = frame.filter(pl.col("doc_id").is_null() & pl.col("title").eq("Dated id"))
    assert refused.height == 1 and "of type datetime cannot key an entry" in refused["notes"][0]
    dated_title = frame.filter(pl.col("doc_id") == "dated-title")
    assert dated_title["notes"][0] == "title is datetime, not text; ignored"
    assert frame["modified_at"].drop_nulls().len() == 30
