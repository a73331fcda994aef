"""Documents that did not get a faithful entry, with why, kept in Redis per version.

kinds:
    rejected  no entry: the input cannot be embedded (no text, no doc_id, over the size cap)
    failed    no entry: embedding failed after retries (model error, invalid vector); retried
              by later runs, and the record goes when one succeeds
    warning   an entry was written from repaired input (invalid UTF-8, control characters,
              truncation, duplicate doc_id, unknown language, modified while read)

Only ``failed`` counts in the error rate: rejected inputs are data problems reported to their
owners, not embedding failures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import redis

from embedding_assets.retrying import transient

REJECTED, FAILED, WARNING = "rejected", "failed", "warning"


@dataclass(frozen=True)
class DeadLetter:
    doc_id: str
    kind: str
    reason: str
    version: str
    attempts: int
    first_seen: int
    last_seen: int


class DeadLetters:
    def __init__(self, client: redis.Redis, version: str, key: str) -> None:
        self.client = client
        self.version = version
        self.key = key  # the control plane's (control_plane.dead_letter_key)

    @transient
    def record(self, entries: Sequence[tuple[str, str, str]]) -> None:
        """Upsert ``(doc_id, kind, reason)``: attempts count up, first_seen is kept."""
        if not entries:
            return
        now = int(time.time())
        existing = self.client.hmget(self.key, [d for d, _, _ in entries])
        mapping = {}
        for (doc_id, kind, reason), raw in zip(entries, existing, strict=True):
            old = json.loads(raw) if raw else None
            letter = DeadLetter(
                doc_id=doc_id,
                kind=kind,
                reason=reason[:2000],
                version=self.version,
                attempts=(old["attempts"] + 1) if old else 1,
                first_seen=old["first_seen"] if old else now,
                last_seen=now,
            )
            mapping[doc_id] = json.dumps(asdict(letter))
        self.client.hset(self.key, mapping=mapping)

    @transient
    def clear(self, doc_ids: Iterable[str], kinds: Iterable[str] | None = None) -> int:
        """Remove the records of these documents (only of ``kinds`` when given)."""
        ids = list(doc_ids)
        if not ids:
            return 0
        if kinds is not None:
            wanted = set(kinds)
            # a run clears every document it chunked cleanly, most of which have no letter: where
            # the letters are fewer than the ids, they are read instead (a first fill has none)
            if self.client.hlen(self.key) < len(ids):
                letters = {k.decode(): v for k, v in self.client.hgetall(self.key).items()}
                stored = [letters.get(d) for d in ids]
            else:
                stored = self.client.hmget(self.key, ids)
            ids = [d for d, raw in zip(ids, stored, strict=True) if raw and json.loads(raw)["kind"] in wanted]
            if not ids:
                return 0
        return int(self.client.hdel(self.key, *ids))

    @transient
    def all(self) -> list[DeadLetter]:
        return sorted(
            (DeadLetter(**json.loads(v)) for v in self.client.hgetall(self.key).values()),
            key=lambda d: (d.kind, d.doc_id),
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for letter in self.all():
            out[letter.kind] = out.get(letter.kind, 0) + 1
        return out
