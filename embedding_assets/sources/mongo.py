"""Reads documents from MongoDB, by shard or by id.

MongoDB cannot compute our shard hash, so shard membership is decided client-side. A run
over many shards streams the collection once and routes each document to its shard; a run
over a few shards reads only ``doc_id`` for all documents and then fetches its own
documents by id. Either way a backfill reads each document O(1) times.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pymongo
import pymongo.errors
from bson import Binary, Decimal128, Int64, ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.errors import InvalidBSON

from embedding_assets.lib.deletion import is_tombstone
from embedding_assets.lib.identity import doc_key, id_candidates, refusal
from embedding_assets.lib.sampling import SeenKeys, bottom_k
from embedding_assets.lib.sharding import shard_of
from embedding_assets.retrying import TRANSIENT, transient
from embedding_assets.sources.read_ahead import pages_ahead, read_ahead

FIELDS = ("doc_id", "title", "body", "language", "indexed_at", "modified_at", "deleted_at", "is_deleted")
_PROJECTION = {f: 1 for f in FIELDS}
# Dates a cursor can stand on: a date before year 1 (it reads as DatetimeMS) is not one.
_DATES = {"$type": "date", "$gte": dt.datetime(1, 1, 1, tzinfo=dt.UTC)}
# Below this fraction of all shards, the id-then-fetch route reads less than a full scan.
_FETCH_BY_ID_FRACTION = 0.25
# One cursor (pages re-walk the collection on some servers); after this many interruptions
# in a row with no document read in between, the scan gives up and the step fails.
_MAX_RESUMES_WITHOUT_PROGRESS = 5
# SecantusDB builds a query's whole result, then copies what is left of it for every page it sends
# (``entry.remaining[batch:]``): pages of 1,000 made a scan of 1M documents quadratic. Its full scans
# are read in pages of at least this many (16 MB per reply caps them, as mongod's do).
_SECANTUS_SCAN_PAGE = 10_000
log = logging.getLogger("embedding_assets.retry")
# (uri, database, collection) -> seconds the last full scan in this process waited for its first page
_SCAN_OPENING: dict[tuple[str, str, str], float] = {}


# BSON's comparison order of the types a doc_id can have (null excluded): how MongoDB sorts them.
_BSON_ORDER = ("number", "string", "object", "array", "binData", "objectId", "bool", "date")


def bson_types_after(value: Any) -> tuple[str, ...]:
    """``$type`` names of the types that sort after ``value``'s."""
    if isinstance(value, bool):
        kind = "bool"
    elif isinstance(value, int | float | Int64 | Decimal128):
        kind = "number"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, ObjectId):
        kind = "objectId"
    elif isinstance(value, dt.datetime):
        kind = "date"
    elif isinstance(value, bytes | Binary):
        kind = "binData"
    elif isinstance(value, list):
        kind = "array"
    else:
        kind = "object"
    return _BSON_ORDER[_BSON_ORDER.index(kind) + 1 :]


class ChangeStreamUnavailable(RuntimeError):
    """The server has no change streams (e.g. a standalone mongod); other routes must cover."""


@dataclass
class Sample:
    """A random sample of documents, the collection's size, and, where the sample came from a
    scan of the whole collection, the doc_ids that scan saw live."""

    documents: list[dict]
    population: int
    seen_live: SeenKeys | None = None


class MongoDocumentSource:
    def __init__(
        self, uri: str, database: str, collection: str, *, batch_size: int = 1000, timeout_ms: int = 15_000
    ) -> None:
        self.uri = uri
        self.timeout_ms = timeout_ms
        self.database = database
        self.collection_name = collection
        self.batch_size = batch_size
        self._client: pymongo.MongoClient | None = None
        self._client_lock = threading.Lock()
        self._secantus: bool | None = None  # which server answers: asked once

    @property
    def client(self) -> pymongo.MongoClient:
        if self._client is None:
            with self._client_lock:  # threads that share a source (publishing) share one client
                if self._client is None:
                    self._client = self._new_client()
        return self._client

    def _new_client(self) -> pymongo.MongoClient:
        return pymongo.MongoClient(
            self.uri,
            tz_aware=True,
            serverSelectionTimeoutMS=self.timeout_ms,
            retryReads=True,
            retryWrites=True,
            # invalid UTF-8 in a document becomes U+FFFD instead of failing the whole read
            unicode_decode_error_handler="replace",
            # a date outside years 1-9999 (MongoDB holds any 64-bit millisecond count) reads as
            # DatetimeMS instead of failing the whole reply: the change sensor's query for
            # future-dated documents, a delta run's fetch. Readers note it and ignore it
            # (snapshot._timestamp), as full scans do.
            datetime_conversion=DatetimeConversion.DATETIME_AUTO,
        )

    @property
    def collection(self) -> Any:
        return self.client[self.database][self.collection_name]

    @property
    def _scan_collection(self) -> Any:
        """The collection with dates decoded as ``DatetimeMS``: a scan's documents all go to
        ``snapshot_row``, which wants milliseconds. It skips a datetime object per date (0.18 s a
        100k scan), and a date past year 9999 no longer fails the whole scan's decoding."""
        collection = self.collection
        options = collection.codec_options.with_options(datetime_conversion=DatetimeConversion.DATETIME_MS)
        return collection.with_options(codec_options=options)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @transient
    def count(self) -> int:
        return self.collection.count_documents({})

    def sample_documents(
        self, size: int, seed: int | None = None, opened: Callable[[], None] | None = None
    ) -> Sample:
        """About ``size`` documents drawn at random, every copy of a drawn doc_id included, and
        the collection's size (tombstones included). ``opened``: as in ``scan_all``, called
        before anything is read past what opening the read took.

        MongoDB: ``$sample`` (a random cursor when the sample is under 5% of the collection) and
        the collection's metadata count. SecantusDB, the embedded server, answers ``$sample`` by
        loading the whole collection into memory (23 GB at 1M documents) and counts by a scan:
        there, one streaming scan keeps the ``size`` doc_ids of smallest seeded hash
        (lib/sampling.py), counts what it read, and remembers which doc_ids it saw live.
        """
        if not self._is_secantus():
            if opened is not None:  # a random cursor is built at once: nothing to start early
                opened()
            total = self.estimated_count()
            if total <= size:  # the whole collection is the sample
                docs = list(self.scan_all())
                return Sample(docs, len(docs))
            pipeline = [{"$sample": {"size": size}}, {"$project": _PROJECTION}]
            return Sample(transient(lambda: list(self.collection.aggregate(pipeline)))(), total)
        salt = random.Random(seed).randrange(2**63)
        live = SeenKeys()

        def key(doc: dict) -> str:
            k = doc_key(doc.get("doc_id"))
            if doc.get("doc_id") is not None and not is_tombstone(doc):
                live.add(k)
            return k

        docs, total = bottom_k(read_ahead(self.scan_all(opened=opened)), size, key, salt)
        return Sample(docs, total, live)

    def samples_by_scanning(self, ask: bool = True) -> bool | None:
        """Whether ``sample_documents`` reads the whole collection (SecantusDB); None where that is
        not known yet and ``ask`` is False (asking is a command to the server)."""
        return self._is_secantus() if ask or self._secantus is not None else None

    def _is_secantus(self) -> bool:
        if self._secantus is None:
            self._secantus = "secantusVersion" in transient(self.client.admin.command)("buildInfo")
        return self._secantus

    def live_ids(self, doc_ids: list[str]) -> set[str]:
        """Which of these doc_ids (their text forms) have a document that is not a tombstone: a
        small projection, for checking that entries still have their document."""
        found: set[str] = set()
        for start in range(0, len(doc_ids), self.batch_size):
            batch = doc_ids[start : start + self.batch_size]
            values = [c for d in batch for c in id_candidates(d)]
            docs = transient(
                lambda values=values: list(
                    self.collection.find(
                        {"doc_id": {"$in": values}}, {"doc_id": 1, "is_deleted": 1, "deleted_at": 1}
                    )
                )
            )()
            found |= {
                doc_key(d["doc_id"])
                for d in docs
                if d.get("is_deleted") is not True and d.get("deleted_at") is None
            }
        return found & set(doc_ids)

    @property
    def _where(self) -> tuple[str, str, str]:
        return (self.uri, self.database, self.collection_name)

    def scan_opening_seconds(self) -> float | None:
        """How long this process's last full scan of the collection waited for its first page:
        what the server takes to start one (SecantusDB builds the whole result first), or None
        where none ran here."""
        return _SCAN_OPENING.get(self._where)

    @transient
    def estimated_count(self) -> int:
        """The collection's size from its metadata (instant; tombstones included)."""
        return int(self.collection.estimated_document_count())

    def iter_shards(
        self, shards: Iterable[int], num_shards: int, *, requesting: Callable[[], None] | None = None
    ) -> Iterator[tuple[int, dict]]:
        """``(shard, document)`` for every document in ``shards``. ``requesting``: as in
        ``scan_all``, for the scan that reads them."""
        wanted = set(shards)
        if len(wanted) >= _FETCH_BY_ID_FRACTION * num_shards:
            scan = self.scan_all(requesting=requesting)
            for doc in read_ahead(scan, pages=pages_ahead(self._scan_page())):
                shard = self._shard(doc, num_shards)
                if shard in wanted:
                    yield shard, doc
            return
        ids = [
            d["doc_id"]
            for d in self.scan_all({"doc_id": 1, "_id": 1}, requesting=requesting)
            if d.get("doc_id") is not None and self._shard(d, num_shards) in wanted
        ]
        for doc in self.iter_by_ids(ids):
            yield self._shard(doc, num_shards), doc

    def scan_all(
        self,
        projection: dict | None = None,
        opened: Callable[[], None] | None = None,
        requesting: Callable[[], None] | None = None,
    ) -> Iterator[dict]:
        """Every document, in ``_id`` order, through one cursor. A dropped connection reopens
        the cursor after the last ``_id`` read (with backoff) instead of starting over.
        ``opened`` is called once the cursor holds its first page, before anything is yielded:
        the server has built the scan by then, and a caller may hold it there. ``requesting`` is
        called once, in the reading thread, right before the first page is asked for: the wait
        for it (the server building the scan) is where a caller's work that holds the
        interpreter costs the read nothing."""
        full = projection is None
        if projection is None:
            # SecantusDB applies a projection in Python, per document: sending every field costs
            # it less (100k documents scanned in 4.0 s without one, 5.5-6.1 s with FIELDS)
            projection = None if self._is_secantus() else _PROJECTION
        last, stalled = None, 0
        while True:
            if requesting is not None:
                requesting, calling = None, requesting
                calling()
            started = time.perf_counter()
            cursor = self._cursor_after(last, projection)
            if last is None and full:
                _SCAN_OPENING[self._where] = time.perf_counter() - started
            if opened is not None:
                opened, called = None, opened
                called()
            try:
                for doc in cursor:
                    last = doc["_id"]
                    stalled = 0
                    if type(doc.get("doc_id")) is DatetimeMS or type(last) is DatetimeMS:
                        _ids_as_datetimes(doc)
                    yield doc
                return
            except TRANSIENT as err:
                stalled += 1
                if stalled > _MAX_RESUMES_WITHOUT_PROGRESS:
                    raise
                log.warning("scan interrupted after _id %s (%s); resuming", last, err)

    def _scan_page(self) -> int:
        """Documents per reply of a full scan."""
        return max(self.batch_size, _SECANTUS_SCAN_PAGE) if self._is_secantus() else self.batch_size

    @transient
    def _cursor_after(self, last: Any, projection: dict | None) -> Any:
        """A cursor past ``last``, with its first batch fetched (so a dead server shows here)."""
        query = {} if last is None else {"_id": {"$gt": last}}
        cursor = self._scan_collection.find(query, projection, batch_size=self._scan_page())
        cursor = cursor.sort("_id", 1).hint("_id_")
        first = next(cursor, None)
        return iter([]) if first is None else itertools.chain([first], cursor)

    def iter_by_ids(self, doc_ids: list[Any]) -> Iterator[dict]:
        """Documents by doc_id: typed values as they are, text ids (from run configs) as any BSON
        value whose string form they are, so an int or ObjectId doc_id is found by its text."""
        for start in range(0, len(doc_ids), self.batch_size):
            batch = doc_ids[start : start + self.batch_size]
            wanted = {doc_key(d) for d in batch}
            values = [c for d in batch for c in (id_candidates(d) if isinstance(d, str) else [d])]
            for doc in self._fetch(values):
                if doc_key(doc.get("doc_id")) in wanted:
                    yield doc

    @transient
    def _fetch(self, batch: list[Any]) -> list[dict]:
        return list(self.collection.find({"doc_id": {"$in": batch}}, _PROJECTION))

    def changes_after(
        self, modified_at: dt.datetime | None, doc_id: Any, limit: int, until: dt.datetime
    ) -> list[dict]:
        """The next ``limit`` documents in ``(modified_at, doc_id)`` order after the cursor, up
        to ``until`` (a cursor never passes the present: a document dated in the future would
        hide every later ordinary edit behind it). ``doc_id`` None: from the start of
        ``modified_at``. Each carries ``_id``, ``doc_id`` and ``modified_at``.

        Ordering on both fields means documents sharing a timestamp are never skipped at a
        page boundary.
        """
        projection = {"doc_id": 1, "modified_at": 1, "_id": 1}
        order = [("modified_at", 1), ("doc_id", 1)]
        if modified_at is None or doc_id is None:
            since = _DATES if modified_at is None else {"$gte": modified_at}
            found = list(
                self.collection.find({"modified_at": {**since, "$lte": until}}, projection)
                .sort(order)
                .limit(limit)
            )
        else:
            # Plain range queries rather than one $or: some servers (SecantusDB) answer an $or
            # with a collection scan, ~30 s per tick at 1M documents; these use the index.
            # $gt compares within one BSON type: the rest of the tie are the later types.
            found = []
            for condition in [{"$gt": doc_id}, *({"$type": t} for t in bson_types_after(doc_id))]:
                if len(found) >= limit:
                    break
                found += list(
                    self.collection.find({"modified_at": modified_at, "doc_id": condition}, projection)
                    .sort(order)
                    .limit(limit - len(found))
                )
            if len(found) < limit:
                found += list(
                    self.collection.find({"modified_at": {"$gt": modified_at, "$lte": until}}, projection)
                    .sort(order)
                    .limit(limit - len(found))
                )
        return [d for d in found if d.get("doc_id") is not None]

    @transient
    def dated_after(self, when: dt.datetime, limit: int) -> list[dict]:
        """Documents dated after ``when`` (the future, by the source's clock errors), at most
        ``limit``: the change cursor does not reach them, so the sensor follows them apart."""
        found = self.collection.find(
            {"modified_at": {"$gt": when}}, {"doc_id": 1, "modified_at": 1, "_id": 1}
        ).sort([("modified_at", 1), ("doc_id", 1)])
        return [d for d in found.limit(limit) if d.get("doc_id") is not None]

    def deletions_after(
        self, resume_token: dict | None, *, max_events: int, max_seconds: float
    ) -> tuple[list[str], dict | None]:
        """``_id``s (as strings) of documents deleted since ``resume_token``, and the new token.

        Without a token the stream starts now. A token the server no longer has (history
        lost) restarts the stream now; the reconciliation sweep covers the gap.
        """
        pipeline = [{"$match": {"operationType": "delete"}}]
        deleted: list[str] = []
        deadline = time.monotonic() + max_seconds
        try:
            with self.collection.watch(pipeline, resume_after=resume_token, max_await_time_ms=200) as stream:
                while len(deleted) < max_events and time.monotonic() < deadline:
                    event = stream.try_next()
                    if event is None:
                        break
                    deleted.append(str(event["documentKey"]["_id"]))
                return deleted, stream.resume_token
        except pymongo.errors.OperationFailure as err:
            if resume_token is not None and err.code in (136, 280, 286):  # history lost
                return self.deletions_after(None, max_events=max_events, max_seconds=max_seconds)
            raise ChangeStreamUnavailable(str(err)) from err

    @transient
    def oldest_change_after(self, when: dt.datetime) -> dt.datetime | None:
        """``modified_at`` of the oldest document changed after ``when`` and not in the future."""
        now = dt.datetime.now(dt.UTC)
        doc = self.collection.find_one(
            {"modified_at": {"$gt": when, "$lte": now}}, {"modified_at": 1}, sort=[("modified_at", 1)]
        )
        return doc["modified_at"] if doc else None

    def latest_change(self, until: dt.datetime) -> dict | None:
        """The last document in ``(modified_at, doc_id)`` order up to ``until``: where a new
        cursor starts."""
        found = list(
            self.collection.find(
                {"modified_at": {**_DATES, "$lte": until}}, {"doc_id": 1, "modified_at": 1, "_id": 0}
            )
            .sort([("modified_at", -1), ("doc_id", -1)])
            .limit(1)
        )
        return found[0] if found else None

    @staticmethod
    def _shard(doc: dict, num_shards: int) -> int:
        doc_id = doc.get("doc_id")
        # Documents without a usable doc_id go to shard 0 so that some run reports them.
        return 0 if doc_id is None or refusal(doc_id) else shard_of(doc_key(doc_id), num_shards)


_AWARE = CodecOptions(tz_aware=True)


def _ids_as_datetimes(doc: dict) -> None:
    """A date-typed ``doc_id`` or ``_id`` as the other reads decode it (a datetime), so that its
    text, which keys or names the document, is the same whichever read found it."""
    for field in ("doc_id", "_id"):
        value = doc.get(field)
        if type(value) is DatetimeMS:
            with contextlib.suppress(InvalidBSON, OverflowError, ValueError):  # past year 9999
                doc[field] = value.as_datetime(_AWARE)
