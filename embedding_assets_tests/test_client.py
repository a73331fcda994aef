"""The read API against a real Redis-protocol server, with synthetic vectors (no model)."""

import dataclasses

import numpy as np
import polars as pl
import pytest
import redis

from embedding_assets.client import EmbeddingClient, QueryVector
from embedding_assets.lib import codec, publish
from embedding_assets.lib import quantization as q
from embedding_assets.lib.frames import TS
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = pytest.mark.servers

SPEC = EmbeddingSpec("m", "f", 16, 254, 32, 2, 1000, "t1", "fp32", "int8")


def _publish(store: FeatureStore, spec: EmbeddingSpec, n: int = 10) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, spec.dimension)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    frame = pl.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "modified_at": pl.Series([1_700_000_000_000 + i for i in range(n)]).cast(TS),
            "content_hash": pl.Series(range(n), dtype=pl.UInt64),
            "vector": pl.Series(v, dtype=pl.Array(pl.Float32, spec.dimension)),
        }
    )
    store.control.register_version(spec)
    calibration = None
    if spec.quantization == q.INT8:
        calibration = store.control.ensure_calibration(spec.tag, q.calibrate_int8(v))
    publish.publish(store.entries, spec, frame, calibration, now=1_800_000_000, max_age_seconds=3600)
    store.control.activate_if_none(spec.tag)
    return frame, v


def test_get_and_get_many_return_dequantized_vectors(redis_url):
    store = FeatureStore.from_url(redis_url)
    _frame, v = _publish(store, SPEC)
    client = EmbeddingClient.from_url(redis_url)
    assert client.version == SPEC.tag
    one = client.get("d3")
    assert one.doc_id == "d3" and one.vector.dtype == np.float32
    assert float(one.vector @ v[3]) / np.linalg.norm(one.vector) > 0.999
    assert one.content_hash == 3
    assert int(one.source_modified_at.timestamp() * 1000) == 1_700_000_000_003
    many = client.get_many(["d1", "missing", "d9"])
    assert [e and e.doc_id for e in many] == ["d1", None, "d9"]
    assert client.get_many([]) == []


def test_a_record_of_another_version_is_refused(redis_url):
    store = FeatureStore.from_url(redis_url)
    _publish(store, SPEC)
    other = dataclasses.replace(SPEC, title_repeat=1)
    raw = redis.Redis.from_url(redis_url)
    foreign = store.entries.read_one(SPEC.tag, "d0")
    header = codec.decode_header(foreign)
    store.control.register_version(other)
    raw.hset(*store.entries.location(other.tag, "d0"), foreign)
    raw.set(f"doc_emb_meta:{other.tag}:calibration", raw.get(f"doc_emb_meta:{SPEC.tag}:calibration"))
    assert header.version_id == SPEC.version_id != other.version_id
    with pytest.raises(codec.CodecError):
        EmbeddingClient(store, other.tag).get("d0")


def test_binary_version_reads_sign_vectors(redis_url):
    store = FeatureStore.from_url(redis_url)
    spec = dataclasses.replace(SPEC, quantization=q.BINARY)
    _, v = _publish(store, spec)
    entry = EmbeddingClient(store, spec.tag).get("d0")
    assert np.allclose(np.linalg.norm(entry.vector), 1)
    assert (np.sign(entry.vector) == np.where(v[0] > 0, 1, -1)).all()


def test_empty_store_says_materialize_first(redis_url):
    with pytest.raises(LookupError, match="materialize"):
        EmbeddingClient.from_url(redis_url)


def test_lost_entries_of_documents_gone_from_the_source_are_not_restored(redis_url):
    """A delta run publishes its whole shard from the shard state; after the store lost its
    entries, the rows of documents deleted meanwhile must not come back as orphans."""
    store = FeatureStore.from_url(redis_url)
    frame, _ = _publish(store, SPEC)
    calibration = store.control.calibration(SPEC.tag)
    store.client.flushdb()  # a Redis restarted without persistence
    store.control.register_version(SPEC)
    store.control.ensure_calibration(SPEC.tag, calibration)
    asked: list[list[str]] = []

    def still_live(ids: list[str]) -> set[str]:
        asked.append(sorted(ids))
        return set(ids) - {"d3", "d7"}  # deleted while the store was down

    when = {"now": 1_800_000_000, "max_age_seconds": 3600}
    stats = publish.publish(store.entries, SPEC, frame, calibration, **when, still_live=still_live)
    assert asked == [sorted(frame["doc_id"].to_list())]  # only the ones without an entry, once
    assert stats.written == 8 and stats.not_restored == 2
    assert set(store.entries.scan_ids(SPEC.tag)) == {f"d{i}" for i in range(10)} - {"d3", "d7"}
    # again: only the two without an entry are looked up, and stay gone
    again = publish.publish(store.entries, SPEC, frame, calibration, **when, still_live=still_live)
    assert len(asked) == 2 and asked[1] == ["d3", "d7"] and again.written == 0


def test_a_first_fill_writes_without_reading_first_and_never_over_a_newer_entry(redis_url):
    """A version with no key yet is written without reading its entries first; an entry that
    another run wrote meanwhile, from a newer state of its document, stays and is superseded."""
    store = FeatureStore.from_url(redis_url)
    frame, _ = _publish(store, SPEC)
    calibration = store.control.calibration(SPEC.tag)
    store.client.flushdb()
    store.control.register_version(SPEC)
    store.control.ensure_calibration(SPEC.tag, calibration)
    assert not store.entries.has_entries(SPEC.tag)
    when = {"now": 1_800_000_000, "max_age_seconds": 3600}
    newer = frame.filter(pl.col("doc_id") == "d3").with_columns(
        pl.col("modified_at") + pl.duration(seconds=5), pl.lit(99, pl.UInt64).alias("content_hash")
    )
    assert publish.publish(store.entries, SPEC, newer, calibration, **when).written == 1  # the other run
    assert store.entries.has_entries(SPEC.tag)
    reads: list[list[str]] = []
    read_headers = store.entries.read_headers

    def counted(version: str, ids: list[str]) -> list:
        reads.append(list(ids))
        return read_headers(version, ids)

    store.entries.read_headers = counted  # type: ignore[method-assign]
    stats = publish.publish(store.entries, SPEC, frame, calibration, **when, first_fill=True)
    assert reads == [frame["doc_id"].to_list()]  # only the read-back of what it wrote
    assert stats.written == 9 and stats.superseded == 1 and stats.failures == 0
    assert codec.decode_header(store.entries.read_one(SPEC.tag, "d3")).content_hash == 99
    assert set(store.entries.scan_ids(SPEC.tag)) == {f"d{i}" for i in range(10)}


def test_ids_of_any_bson_scalar_read_the_entries_their_string_form_keys(redis_url):
    """A service holds the doc_ids MongoDB holds (ints, ObjectIds): the client keys them as the
    pipeline does and answers with the caller's own values, so its lookups by id still work."""
    from bson import ObjectId

    store = FeatureStore.from_url(redis_url)
    oid = ObjectId("65a1b2c3d4e5f60718293a4b")
    frame, v = _publish(store, SPEC, n=3)
    frame = frame.with_columns(pl.Series("doc_id", ["42", str(oid), "7.5"]))
    publish.publish(
        store.entries,
        SPEC,
        frame,
        store.control.calibration(SPEC.tag),
        now=1_800_000_000,
        max_age_seconds=3600,
    )
    client = EmbeddingClient.from_url(redis_url)
    one = client.get(42)
    assert one is not None and one.doc_id == 42 and float(one.vector @ v[0]) > 0.99
    many = client.get_many([oid, 43, 7.5])
    assert [e and e.doc_id for e in many] == [oid, None, 7.5]
    assert float(many[0].vector @ v[1]) > 0.99
    ranking = client.rerank(QueryVector(v[1], SPEC.tag), [42, oid, 43])
    assert ranking.ids()[0] == oid and set(ranking.ids()) == {42, oid} and ranking.missing == [43]
    assert client.similar(oid, [42, oid]).ids()[0] == oid
    with pytest.raises(LookupError, match="43"):
        client.similar(43, [42])
