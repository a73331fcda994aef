"""Rules that decide what a stored entry needs, given the document it should describe.

Kept apart from Redis and Dagster so the rules are tested on their own. The same rules
drive the writes (what to rewrite) and the checks (what is stale).
"""

from __future__ import annotations

from enum import StrEnum

from embedding_assets.lib.codec import RecordHeader


class EntryState(StrEnum):
    CURRENT = "current"  # nothing to do
    MISSING = "missing"  # no entry: write
    STALE = "stale"  # other text or version: write the new vector
    SOURCE_NEWER = "source_newer"  # same text, newer modified_at: restamp, no re-embedding
    OLD = "old"  # same text, computed too long ago: restamp and renew TTL, no re-embedding
    NEWER_THAN_SOURCE = "newer_than_source"  # entry from a later source state: leave it


def classify(
    header: RecordHeader | None,
    *,
    version_id: int,
    content_hash: int,
    source_ms: int,
    now: int,
    max_age_seconds: int,
) -> EntryState:
    """What the entry for one document needs."""
    if header is None:
        return EntryState.MISSING
    if header.source_ms > source_ms:
        return EntryState.NEWER_THAN_SOURCE
    if header.version_id != version_id or header.content_hash != content_hash:
        return EntryState.STALE
    if header.source_ms < source_ms:
        return EntryState.SOURCE_NEWER
    if now - header.computed_at > max_age_seconds:
        return EntryState.OLD
    return EntryState.CURRENT


NEEDS_WRITE = frozenset({EntryState.MISSING, EntryState.STALE, EntryState.SOURCE_NEWER, EntryState.OLD})


def sla_breaches(
    header: RecordHeader, *, content_hash: int, source_ms: int, now: int, sla_seconds: int
) -> tuple[bool, bool]:
    """The promise users were given, per entry: ``(older than its document, older than the SLA)``."""
    behind = header.content_hash != content_hash or header.source_ms < source_ms
    return behind, now - header.computed_at > sla_seconds
