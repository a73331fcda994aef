"""Rules that decide what a stored entry needs, given the document it should describe.

Kept apart from Redis and Dagster so the rules are tested on their own. The same rules
drive the writes (what to rewrite) and the checks (what is stale).

Which of two states of a document is the newer is decided by reads and writes, not by the
source's ``modified_at`` alone (it can be missing, in the future, or go back): a state read
after an entry was written is at least as new as the state that entry was computed from (its
writer read before it wrote). Only an entry written after our read (a concurrent writer) is
judged by ``modified_at``. Both times are the feature store server's clock, in whole seconds.
"""

from __future__ import annotations

from enum import StrEnum

from embedding_assets.lib.codec import RecordHeader


class EntryState(StrEnum):
    CURRENT = "current"  # nothing to do
    MISSING = "missing"  # no entry: write
    STALE = "stale"  # other text or version: write the new vector
    SOURCE_NEWER = "source_newer"  # same text, newer modified_at: restamp, no re-embedding
    SOURCE_EARLIER = "source_earlier"  # same text, the document's modified_at went back: restamp
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
    read_s: int | None = None,
) -> EntryState:
    """What the entry for one document needs; ``read_s``: when the document was read (server
    seconds; None when unknown, and then ``modified_at`` alone orders the two states)."""
    if header is None:
        return EntryState.MISSING
    if header.source_ms > source_ms and not read_after_write(read_s, header.computed_at):
        return EntryState.NEWER_THAN_SOURCE
    if header.version_id != version_id or header.content_hash != content_hash:
        return EntryState.STALE
    if header.source_ms < source_ms:
        return EntryState.SOURCE_NEWER
    if header.source_ms > source_ms:
        return EntryState.SOURCE_EARLIER
    if now - header.computed_at > max_age_seconds:
        return EntryState.OLD
    return EntryState.CURRENT


NEEDS_WRITE = frozenset(
    {EntryState.MISSING, EntryState.STALE, EntryState.SOURCE_NEWER, EntryState.SOURCE_EARLIER, EntryState.OLD}
)


def read_after_write(read_s: int | None, written_s: int) -> bool:
    """The document was read after the entry was written (whole seconds, strictly: the same
    second is not after). The Lua write guard in stores/redis_entries.py applies the same test."""
    return read_s is not None and read_s > written_s


def sla_breaches(
    header: RecordHeader, *, content_hash: int, source_ms: int, now: int, sla_seconds: int
) -> tuple[bool, bool]:
    """The promise users were given, per entry: ``(older than its document, older than the SLA)``."""
    behind = header.content_hash != content_hash or header.source_ms < source_ms
    return behind, now - header.computed_at > sla_seconds
