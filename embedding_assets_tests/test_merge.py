"""Writes of racing runs merged per document: lib/merge.py."""

import datetime as dt
import itertools

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from embedding_assets.lib.frames import SNAPSHOT_SCHEMA, conform
from embedding_assets.lib.merge import TOMBSTONE_RETENTION, follow_upstream, latest_reads, tombstones

T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _rows(read_s: int, **bodies: str | None) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"doc_id": list(bodies), "body": list(bodies.values()), "read_at": [_at(read_s)] * len(bodies)},
        schema={"doc_id": pl.String, "body": pl.String, "read_at": SNAPSHOT_SCHEMA["read_at"]},
    )
    return conform(frame, SNAPSHOT_SCHEMA)


def _bodies(frame: pl.DataFrame) -> dict:
    return dict(zip(frame["doc_id"].to_list(), frame["body"].to_list(), strict=True))


def test_a_full_scan_read_earlier_keeps_what_a_later_delta_wrote():
    stored = _rows(0, a="a0", y="y0", z="z0")
    # a delta read at 20: x inserted, y deleted, z edited
    after_delta, deleted = latest_reads(stored, None, _rows(20, x="x1", z="z1"), tombstones(["y"], _at(20)))
    assert _bodies(after_delta) == {"a": "a0", "x": "x1", "z": "z1"}
    # a full scan started at 10 (before the delta's read) writes last: it saw y, not x, old z;
    # and it saw "a" gone
    live, deleted = latest_reads(after_delta, deleted, _rows(10, y="y0", z="z0"), scanned_at=_at(10))
    assert _bodies(live) == {"x": "x1", "z": "z1"}
    assert dict(zip(deleted["doc_id"], deleted["read_at"], strict=True)) == {"a": _at(10), "y": _at(20)}


def test_a_full_scan_read_later_wins_and_sees_deletions():
    stored = _rows(20, x="x1", z="z1")
    live, deleted = latest_reads(stored, None, _rows(30, z="z2", w="w2"), scanned_at=_at(30))
    assert _bodies(live) == {"w": "w2", "z": "z2"}
    assert deleted["doc_id"].to_list() == ["x"]


def test_an_older_delta_written_late_changes_nothing_newer():
    stored = _rows(30, z="z2")
    live, deleted = latest_reads(stored, None, _rows(20, z="z1"), tombstones(["q"], _at(20)))
    assert _bodies(live) == {"z": "z2"}
    # a deletion seen earlier is recorded (a still older read cannot bring q back)
    assert deleted["doc_id"].to_list() == ["q"]
    # and a later read of q does bring it back
    live, deleted = latest_reads(live, deleted, _rows(25, q="q again"))
    assert _bodies(live) == {"q": "q again", "z": "z2"} and deleted.height == 0


def test_unread_times_count_as_oldest_and_ties_go_to_the_write():
    legacy = _rows(0, a="old").with_columns(pl.lit(None, dtype=SNAPSHOT_SCHEMA["read_at"]).alias("read_at"))
    live, _ = latest_reads(legacy, None, _rows(0, a="new"))
    assert _bodies(live) == {"a": "new"}
    live, _ = latest_reads(_rows(5, a="first"), None, _rows(5, a="second"))
    assert _bodies(live) == {"a": "second"}


def test_rows_without_doc_id_come_from_the_latest_full_scan():
    unnamed = conform(pl.DataFrame({"source_id": ["s1"], "body": ["no id"]}), SNAPSHOT_SCHEMA)
    stored = pl.concat([_rows(0, a="a"), unnamed])
    live, _ = latest_reads(stored, None, _rows(5, b="b"))  # a delta keeps them
    assert live["doc_id"].null_count() == 1
    live, _ = latest_reads(stored, None, _rows(5, a="a"), scanned_at=_at(5))  # a scan replaces them
    assert live["doc_id"].null_count() == 0


def test_tombstones_are_forgotten_after_the_retention():
    old = tombstones(["gone"], _at(0))
    _, deleted = latest_reads(_rows(0), old, _rows(1, a="a"), now=_at(0) + TOMBSTONE_RETENTION)
    assert deleted["doc_id"].to_list() == ["gone"]
    _, deleted = latest_reads(_rows(0), old, _rows(1, a="a"), now=_at(1) + TOMBSTONE_RETENTION)
    assert deleted.height == 0


# Any order of writes ends in the same state: per document, the latest observation.
_observation = st.tuples(
    st.sampled_from("abcd"),  # doc_id
    st.integers(0, 5),  # read second
    st.booleans(),  # live (else: seen deleted)
)


@settings(deadline=None, max_examples=60)
@given(st.lists(st.lists(_observation, max_size=4, unique_by=lambda o: o[0]), min_size=1, max_size=4))
def test_any_order_of_delta_writes_converges_on_the_latest_read(writes):
    def apply(order):
        live, deleted = None, None
        for w in order:
            rows = [(d, t) for d, t, alive in w if alive]
            gone = [(d, t) for d, t, alive in w if not alive]
            new = conform(
                pl.DataFrame(
                    {
                        "doc_id": [d for d, _ in rows],
                        "body": [f"{d}@{t}" for d, t in rows],
                        "read_at": [_at(t) for _, t in rows],
                    },
                    schema_overrides={
                        "read_at": SNAPSHOT_SCHEMA["read_at"],
                        "doc_id": pl.String,
                        "body": pl.String,
                    },
                ),
                SNAPSHOT_SCHEMA,
            )
            dead = pl.DataFrame(
                {"doc_id": [d for d, _ in gone], "read_at": [_at(t) for _, t in gone]},
                schema={"doc_id": pl.String, "read_at": SNAPSHOT_SCHEMA["read_at"]},
            )
            live, deleted = latest_reads(live, deleted, new, dead)
        return _bodies(live)

    # expected: per doc, its latest observation (at equal times the later write)
    latest: dict[str, tuple[int, bool]] = {}
    for w in writes:
        for d, t, alive in w:
            if d not in latest or t >= latest[d][0]:
                latest[d] = (t, alive)
    expected = {d: f"{d}@{t}" for d, (t, alive) in latest.items() if alive}
    assert apply(writes) == expected
    # reordering only changes the winner between equal read times of one document
    for order in itertools.permutations(writes):
        result = apply(order)
        assert set(result) <= set(latest)
        assert all(result.get(d, "").endswith(f"@{latest[d][0]}") for d in result)


def _derived(ids_at: dict[str, int], tag: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": list(ids_at),
            "read_at": [_at(t) for t in ids_at.values()],
            "what": [f"{tag}:{d}" for d in ids_at],
        },
        schema_overrides={"read_at": SNAPSHOT_SCHEMA["read_at"]},
    )


def test_derived_rows_follow_the_upstream_as_stored_now():
    upstream = _derived({"a": 20, "b": 10, "c": 10}, "up").select("doc_id", "read_at")
    stored = _derived({"a": 20, "b": 10, "gone": 10}, "stored")  # another run's, computed later
    writing = _derived({"a": 10, "b": 10, "gone": 5}, "mine")  # computed from an older upstream
    merged = follow_upstream(stored, writing, upstream, ["read_at"])
    assert dict(zip(merged["doc_id"], merged["what"], strict=True)) == {
        "a": "stored:a",  # agrees with upstream, mine does not
        "b": "mine:b",  # both agree: the write
    }  # c: neither has it yet (the run that wrote upstream's c will); gone: upstream dropped it
