"""What an entry needs, given its document: lib/staleness.py."""

from embedding_assets.lib.codec import RecordHeader
from embedding_assets.lib.staleness import NEEDS_WRITE, EntryState, classify

NOW = 1_800_000_000


def header(**kw):
    base = dict(
        codec="int8", dimension=4, version_id=7, computed_at=NOW - 10, content_hash=42, source_ms=1000
    )
    base.update(kw)
    return RecordHeader(**base)


def state(h, **kw):
    args = dict(version_id=7, content_hash=42, source_ms=1000, now=NOW, max_age_seconds=3600)
    args.update(kw)
    return classify(h, **args)


def test_staleness_rules():
    assert state(None) is EntryState.MISSING
    assert state(header()) is EntryState.CURRENT
    assert state(header(content_hash=41)) is EntryState.STALE
    assert state(header(version_id=8)) is EntryState.STALE
    assert state(header(), source_ms=2000) is EntryState.SOURCE_NEWER  # metadata-only edit
    assert state(header(computed_at=NOW - 7200)) is EntryState.OLD
    assert state(header(source_ms=3000), source_ms=2000) is EntryState.NEWER_THAN_SOURCE
    assert state(header(source_ms=3000, content_hash=1), source_ms=2000) is EntryState.NEWER_THAN_SOURCE
    writes = {EntryState.MISSING, EntryState.STALE, EntryState.SOURCE_NEWER, EntryState.SOURCE_EARLIER}
    assert writes | {EntryState.OLD} == NEEDS_WRITE


def test_a_state_read_after_the_entry_was_written_is_the_newer_whatever_its_date():
    written = NOW - 10  # the entry's computed_at
    later_date = header(source_ms=3000, content_hash=1)
    # read before or in the same second as the write: a concurrent writer's later date wins
    assert state(later_date, source_ms=2000, read_s=written - 5) is EntryState.NEWER_THAN_SOURCE
    assert state(later_date, source_ms=2000, read_s=written) is EntryState.NEWER_THAN_SOURCE
    # read after it: the source went back in time (restored, corrected, a duplicate deleted)
    assert state(later_date, source_ms=2000, read_s=written + 1) is EntryState.STALE
    assert state(header(source_ms=3000), source_ms=2000, read_s=written + 1) is EntryState.SOURCE_EARLIER
