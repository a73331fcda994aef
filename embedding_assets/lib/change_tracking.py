"""Cursors and grouping for change sensors, free of Dagster and MongoDB."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import xxhash
from bson import json_util
from bson.datetime_ms import DatetimeMS

from embedding_assets.lib.identity import doc_key
from embedding_assets.lib.sharding import shard_of


@dataclass(frozen=True, order=True)
class ChangeCursor:
    """Position in ``(modified_at, doc_id)`` order: ties on modified_at are ordered by doc_id."""

    modified_at: dt.datetime
    # the doc_id as MongoDB holds it (str, int, ObjectId, ...): a range query on doc_id compares
    # within one BSON type, so a cursor turned into text would skip the ties of other types
    doc_id: Any
    # digest of the documents dated after the present when the cursor was last saved
    # (future_digest): they are followed apart, since the cursor never passes the present
    future: str | None = None
    # documents read before they settled, and already requested: doc key -> modified_at (ISO).
    # When the cursor reaches them they are not requested again (``early_changes``).
    early: dict[str, str] = field(default_factory=dict, compare=False)

    def dump(self) -> str:
        data = {"modified_at": self.modified_at.isoformat(), "doc_id": self.doc_id, "future": self.future}
        if self.early:
            data["early"] = self.early
        return json_util.dumps(data)

    @classmethod
    def parse(cls, raw: str | None) -> ChangeCursor | None:
        if not raw:
            return None
        data = json_util.loads(raw)
        return cls(
            dt.datetime.fromisoformat(data["modified_at"]),
            data["doc_id"],
            data.get("future"),
            dict(data.get("early") or {}),
        )

    @classmethod
    def of(cls, doc: dict) -> ChangeCursor:
        when = doc["modified_at"]
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return cls(when, doc["doc_id"])


def _stamp(doc: dict) -> str:
    when = doc["modified_at"]
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).isoformat()


def early_changes(
    requested: dict[str, str], settled: list[dict], unsettled: list[dict], limit: int
) -> tuple[list[dict], dict[str, str]]:
    """What to request now, and what is then requested early.

    The cursor stays behind the present by the settle time, so that it never passes a write still
    being committed; waiting that long for every edit is latency nobody asked for. Documents already
    visible in the settle window (``unsettled``) are requested at once and remembered
    (``requested``: the previous tick's answer); when the cursor reaches them, those with the same
    ``modified_at`` are not requested again. A write committed late is still found by the cursor,
    since the cursor itself never moves early. Over ``limit`` unsettled documents (a bulk load) none
    is taken early: they wait for the cursor, as before."""
    todo = [d for d in settled if requested.get(doc_key(d["doc_id"])) != _stamp(d)]
    if len(unsettled) >= limit:
        return todo, {}
    early = {doc_key(d["doc_id"]): _stamp(d) for d in unsettled}
    todo += [d for d in unsettled if requested.get(doc_key(d["doc_id"])) != _stamp(d)]
    return todo, early


def future_digest(docs: Iterable[dict]) -> str:
    """What the future-dated documents are now: ``(doc_id, modified_at)`` of each, hashed. A date
    past year 9999 comes as ``DatetimeMS`` (sources/mongo.py): its milliseconds stand for it."""
    pairs = sorted(f"{doc_key(d['doc_id'])}\x00{_date_text(d['modified_at'])}" for d in docs)
    return xxhash.xxh3_64_hexdigest("\n".join(pairs).encode())


def _date_text(value: dt.datetime | DatetimeMS) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else f"{int(value)} ms"


def group_by_shard(doc_ids: Iterable[str], num_shards: int) -> dict[int, list[str]]:
    """Unique ids per shard, sorted, so equal inputs give equal run config and run keys."""
    groups: dict[int, set[str]] = defaultdict(set)
    for doc_id in doc_ids:
        groups[shard_of(doc_id, num_shards)].add(doc_id)
    return {shard: sorted(ids) for shard, ids in sorted(groups.items())}


def run_key(kind: str, shards: Iterable[int], position: str, doc_ids: list[str]) -> str:
    """Same tick, same changes: same key, so a retried tick never launches twice."""
    digest = xxhash.xxh3_64_hexdigest("\n".join([position, *doc_ids]).encode())
    return f"{kind}:{','.join(map(str, shards))}:{digest}"


def shard_runs(shards: Iterable[int]) -> list[list[int]]:
    """Changed shards split into runs over contiguous ranges, as Dagster's own single-run
    backfill policy splits a partition subset: a run covers one range of partitions, and every
    partition in it is recorded as materialized, so a range never spans a shard nothing changed."""
    groups: list[list[int]] = []
    for shard in sorted(set(shards)):
        if groups and shard == groups[-1][-1] + 1:
            groups[-1].append(shard)
        else:
            groups.append([shard])
    return groups
