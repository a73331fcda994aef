"""doc_ids of any BSON scalar type: keyed by their string form, found again by it."""

import datetime as dt

import pytest
from bson import Int64, ObjectId

from embedding_assets.defs import sensors
from embedding_assets.defs.sensors import document_changes_sensor
from embedding_assets.dev.harness import (
    Daemon,
    collection,
    load_sample,
    materialize,
)
from embedding_assets.lib.identity import doc_key, id_candidates, refusal
from embedding_assets.sources.mongo import bson_types_after
from embedding_assets.stores.feature_store import FeatureStore
from embedding_assets.stores.redis_entries import TOMBSTONE

OID = ObjectId("65a1b2c3d4e5f60718293a4b")


def test_every_scalar_is_found_again_from_its_string_form():
    for value in (7, -3, Int64(2**40), 2.5, OID, True, False, "doc-1", "0042"):
        assert value in id_candidates(doc_key(value)), value
    assert id_candidates("doc-1") == ["doc-1"]
    assert id_candidates("0042") == ["0042", 42]  # a string that looks like a number may be either
    assert id_candidates("1e400") == ["1e400"]  # not the string form of any double


def test_types_after_follow_bson_order():
    assert bson_types_after(7)[:2] == ("string", "object")
    assert "number" not in bson_types_after("a") and "objectId" in bson_types_after("a")
    assert bson_types_after(True) == ("date",)  # bool is not a number here
    assert "bool" in bson_types_after(OID)


@pytest.mark.servers
@pytest.mark.slow
def test_documents_with_non_string_ids_survive_sensor_runs(pipeline_env, monkeypatch, measure, static_dir):
    monkeypatch.setenv("EA_BACKEND", "static")  # ids are what is tested: the fast tier
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    when = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    typed = [
        {"doc_id": 7, "title": "Seven", "body": "An integer id.", "modified_at": when},
        {"doc_id": Int64(2**40), "title": "Big", "body": "A long id.", "modified_at": when},
        {"doc_id": 2.5, "title": "Half", "body": "A double id.", "modified_at": when},
        {"doc_id": OID, "title": "Object", "body": "An ObjectId.", "modified_at": when},
        {"doc_id": True, "title": "Yes", "body": "A boolean id.", "modified_at": when},
    ]
    load_sample(pipeline_env, 20)
    coll = collection(pipeline_env)
    coll.insert_many([dict(d) for d in typed])
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    assert measure(coll, store, version, "backfill").none

    daemon = Daemon()
    daemon.tick(document_changes_sensor)  # starts at the newest document
    # edits of every typed document, all at one instant, so the sensor pages through a tie of
    # five BSON types (pages of 2 documents)
    later = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    for doc in typed:
        coll.update_one(
            {"doc_id": doc["doc_id"]}, {"$set": {"body": f"Edited {doc['title']}.", "modified_at": later}}
        )
    monkeypatch.setattr(sensors, "PAGE_SIZE", 2)
    daemon.sync(document_changes_sensor)
    assert measure(coll, store, version, "sensor runs").none  # none lost, all current
    for doc in typed:
        assert store.entries.read_one(version, doc_key(doc["doc_id"])) is not None


def test_ids_whose_text_does_not_lead_back_are_refused_with_a_reason():
    for value in (7, -3, Int64(2**40), 2.5, OID, True, "doc-1", "", None):
        assert refusal(value) is None, value
    assert "an array" in refusal([1, 2])
    assert "an embedded document" in refusal({"a": 1})
    assert "NUL byte" in refusal(TOMBSTONE + "doc-1")
    for value in (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), b"\x01\x02", float("nan")):
        assert "does not lead back" in refusal(value), value


def test_the_store_never_writes_a_doc_id_in_the_deletion_marker_namespace(pipeline_env):
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    with pytest.raises(ValueError, match="deletion-marker"):
        store.entries.write_if_not_older("v-test", ["ok", TOMBSTONE + "ok"], [b"x", b"y"])


@pytest.mark.servers
@pytest.mark.slow
def test_refused_ids_get_no_entry_from_any_run_and_a_dead_letter_that_says_why(
    pipeline_env, measure, monkeypatch, static_dir
):
    """An array, an embedded document and a string in the deletion-marker namespace: the backfill
    records why and writes nothing; their edits start no run that deletes another entry; an id
    renamed to an array loses its old entry; every entry stays visible to scans."""
    monkeypatch.setenv("EA_BACKEND", "static")
    monkeypatch.setenv("EA_STATIC_DIR", static_dir)
    when = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    odd = [
        {"doc_id": [1, 2], "title": "Array", "body": "An array id.", "modified_at": when},
        {"doc_id": {"a": 1}, "title": "Object", "body": "An embedded document id.", "modified_at": when},
        {"doc_id": TOMBSTONE + "x", "title": "Marker", "body": "A reserved prefix.", "modified_at": when},
    ]
    docs = load_sample(pipeline_env, 20)
    coll = collection(pipeline_env)
    coll.insert_many([dict(d) for d in odd])
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    version = store.control.active_version()
    assert measure(coll, store, version, "backfill with refused ids").none
    ids = set(store.entries.scan_ids(version))
    assert ids == {doc_key(d["doc_id"]) for d in docs}  # nothing written, nothing hidden
    rejected = [d for d in store.control.dead_letters(version).all() if d.kind == "rejected"]
    letters = {d.reason.split(";")[0] for d in rejected}
    assert any("is an array" in r for r in letters), letters
    assert any("embedded document" in r for r in letters), letters
    assert any("NUL byte" in r for r in letters), letters

    daemon = Daemon()
    daemon.tick(document_changes_sensor)  # starts at the newest document
    later = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    renamed = docs[0]["doc_id"]
    coll.update_one({"doc_id": renamed}, {"$set": {"doc_id": [renamed], "modified_at": later}})
    for doc in odd:
        coll.update_one({"doc_id": doc["doc_id"]}, {"$set": {"body": "Edited.", "modified_at": later}})
    daemon.sync(document_changes_sensor)
    assert measure(coll, store, version, "refused ids edited, one id renamed to an array").none
    assert set(store.entries.scan_ids(version)) == ids - {doc_key(renamed)}
