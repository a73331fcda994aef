"""Source documents as snapshot rows: lib/snapshot.py."""

import datetime as dt

import polars as pl

from embedding_assets.lib.deletion import is_tombstone
from embedding_assets.lib.snapshot import snapshot_frame


def _docs(*rows):
    return snapshot_frame(rows)


def test_tombstones_and_duplicates_in_snapshots():
    t1, t2 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert is_tombstone({"is_deleted": True}) and is_tombstone({"deleted_at": t1})
    assert not is_tombstone({"is_deleted": False, "deleted_at": None})
    frame = _docs(
        {"_id": 1, "doc_id": "a", "body": "old", "modified_at": t1},
        {"_id": 2, "doc_id": "a", "body": "new", "modified_at": t2},
        {"_id": 3, "doc_id": "b", "body": "x", "is_deleted": True},
        {"_id": 4, "doc_id": "c", "body": "y", "deleted_at": t1},
        {"_id": 5, "body": "no id"},
    )
    assert frame["doc_id"].to_list() == ["a", None]
    assert frame["body"].to_list() == ["new", "no id"]


def test_dates_keep_their_instant_to_the_millisecond_whatever_their_zone():
    """Dates become epoch milliseconds before the frame: aware ones keep their instant, naive ones
    are UTC, dates before 1970 stay where they are, and what is not a date is noted."""
    east = dt.timezone(dt.timedelta(hours=5, minutes=30))
    docs = [
        {"doc_id": "a", "modified_at": dt.datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=east)},
        {"doc_id": "b", "modified_at": dt.datetime(2026, 3, 1, 6, 30, 0, 123_000)},
        {"doc_id": "c", "modified_at": dt.datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=dt.UTC)},
        {"doc_id": "d", "modified_at": "2026-03-01", "indexed_at": dt.datetime(1970, 1, 1, tzinfo=dt.UTC)},
    ]
    frame = snapshot_frame(docs)
    got = dict(zip(frame["doc_id"], frame["modified_at"].dt.epoch("ms"), strict=True))
    assert got["a"] == got["b"] == int(dt.datetime(2026, 3, 1, 6, 30, tzinfo=dt.UTC).timestamp() * 1000) + 123
    assert got["c"] == -500 and got["d"] is None
    d = frame.filter(pl.col("doc_id") == "d").row(0, named=True)
    assert d["indexed_at"] == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert "modified_at is str, not a date" in d["notes"]


def test_dates_read_as_milliseconds_are_the_same_instants_and_past_9999_are_noted():
    """A full scan decodes BSON dates as ``DatetimeMS`` (sources/mongo.py): the same instants as
    datetimes, any date a datetime can hold, and a note, not a failure, for one it cannot."""
    from bson.datetime_ms import DatetimeMS

    last_ms = int((dt.datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=dt.UTC)).timestamp() * 1000)
    first_ms = int(dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    when = dt.datetime(2026, 3, 1, 6, 30, 0, 123_000, tzinfo=dt.UTC)
    docs = [
        {"doc_id": "as-datetime", "modified_at": when},
        {"doc_id": "as-ms", "modified_at": DatetimeMS(when)},
        {"doc_id": "last", "modified_at": DatetimeMS(last_ms), "indexed_at": DatetimeMS(first_ms)},
        {"doc_id": "beyond", "modified_at": DatetimeMS(last_ms + 1), "indexed_at": DatetimeMS(first_ms - 1)},
        {"doc_id": "dated-title", "title": DatetimeMS(when), "body": "x"},
        {"doc_id": "datetime-title", "title": when, "body": "x"},
    ]
    rows = {r["doc_id"]: r for r in snapshot_frame(docs).iter_rows(named=True)}
    assert rows["as-ms"]["modified_at"] == rows["as-datetime"]["modified_at"] == when
    assert rows["last"]["modified_at"].year == 9999 and rows["last"]["indexed_at"].year == 1
    beyond = rows["beyond"]
    assert beyond["modified_at"] is None and beyond["indexed_at"] is None
    assert "modified_at is outside years 1-9999" in beyond["notes"]
    assert "indexed_at is outside years 1-9999" in beyond["notes"]
    # a date where text belongs reads the same whichever way it was decoded
    noted = "title is datetime, not text; ignored"
    assert rows["dated-title"]["notes"] == rows["datetime-title"]["notes"] == noted


def _odd_documents():
    """Documents as a scan decodes them, each field usual or odd, in any mix."""
    from bson import ObjectId
    from bson.datetime_ms import DatetimeMS
    from hypothesis import strategies as st

    when = st.integers(-(2**45), 2**45).map(DatetimeMS)
    usual = {
        "_id": st.one_of(st.builds(ObjectId), st.integers(0, 99), st.none()),
        "doc_id": st.text(max_size=4),
        "title": st.one_of(st.none(), st.text(max_size=8)),
        "body": st.one_of(st.none(), st.text(max_size=8)),
        "language": st.one_of(st.none(), st.sampled_from(["en", "pt-BR", "EN", "xx", "zz-1", "", "é"])),
        "indexed_at": st.one_of(st.none(), when),
        "modified_at": st.one_of(st.none(), when),
    }
    odd = {
        "doc_id": st.one_of(
            st.none(), st.integers(), st.just("\x00gone"), st.lists(st.integers(), max_size=1)
        ),
        "title": st.one_of(st.binary(max_size=4), st.integers(), when),
        "language": st.integers(),
        "modified_at": st.one_of(st.text(max_size=2), st.builds(dt.datetime.now)),
        "indexed_at": st.just(DatetimeMS(2**62)),
        "is_deleted": st.just(True),
    }

    @st.composite
    def document(draw):
        doc = {name: draw(v) for name, v in usual.items() if name == "doc_id" or draw(st.booleans())}
        if draw(st.integers(0, 9)) == 0:  # an odd field in one document of ten
            name = draw(st.sampled_from(sorted(odd)))
            doc[name] = draw(odd[name])
        return doc

    return st.lists(document(), max_size=30)


def test_rows_made_a_column_at_a_time_are_the_rows_made_one_by_one():
    """A batch of usual documents is made a column at a time (lib/snapshot.py, ``_plain_rows``);
    any odd one sends the whole batch through ``snapshot_row``. Either way the rows are the same."""
    from hypothesis import given, settings

    from embedding_assets.lib.frames import SNAPSHOT_SCHEMA
    from embedding_assets.lib.snapshot import snapshot_row, snapshot_rows

    @settings(max_examples=300, deadline=None)
    @given(_odd_documents())
    def same(docs):
        rows = [snapshot_row(d) for d in docs if not is_tombstone(d)]
        one_by_one = pl.DataFrame({n: [r[n] for r in rows] for n in SNAPSHOT_SCHEMA}, schema=SNAPSHOT_SCHEMA)
        assert snapshot_rows(docs).equals(one_by_one)

    same()


def test_a_batch_of_usual_documents_is_made_a_column_at_a_time():
    """The fast path is taken where it should be: without it the test above would pass too."""
    from bson.datetime_ms import DatetimeMS

    from embedding_assets.lib import snapshot

    usual = [
        {"_id": i, "doc_id": f"d{i}", "title": "t", "language": "en", "modified_at": DatetimeMS(i)}
        for i in range(5)
    ]
    assert snapshot._plain_rows(usual) is not None
    assert snapshot._plain_rows([*usual, {"doc_id": 7}]) is None  # an int id: noted row by row
    assert snapshot._plain_rows([*usual, {"doc_id": "x", "modified_at": dt.datetime.now()}]) is None
    assert snapshot._plain_rows([*usual, {"doc_id": "\x00x"}]) is None
