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
    assert {EntryState.MISSING, EntryState.STALE, EntryState.SOURCE_NEWER, EntryState.OLD} == NEEDS_WRITE
