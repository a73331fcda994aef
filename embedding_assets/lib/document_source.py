"""Reads documents from MongoDB, by shard or by id.

MongoDB cannot compute our shard hash, so shard membership is decided client-side. A run
over many shards streams the collection once and routes each document to its shard; a run
over a few shards reads only ``doc_id`` for all documents and then fetches its own
documents by id. Either way a backfill reads each document O(1) times.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pymongo

from embedding_assets.lib.sharding import shard_of

FIELDS = ("doc_id", "title", "body", "language", "indexed_at", "modified_at")
_PROJECTION = {f: 1 for f in FIELDS}
# Below this fraction of all shards, the id-then-fetch route reads less than a full scan.
_FETCH_BY_ID_FRACTION = 0.25


class MongoDocumentSource:
    def __init__(self, uri: str, database: str, collection: str, *, batch_size: int = 1000) -> None:
        self.uri = uri
        self.database = database
        self.collection_name = collection
        self.batch_size = batch_size
        self._client: pymongo.MongoClient | None = None

    @property
    def client(self) -> pymongo.MongoClient:
        if self._client is None:
            self._client = pymongo.MongoClient(self.uri, tz_aware=True, serverSelectionTimeoutMS=15_000)
        return self._client

    @property
    def collection(self) -> Any:
        return self.client[self.database][self.collection_name]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ensure_indexes(self) -> None:
        """The indexes the reads and the change sensor rely on."""
        self.collection.create_index("doc_id")
        self.collection.create_index([("modified_at", 1), ("doc_id", 1)])

    def count(self) -> int:
        return self.collection.count_documents({})

    def iter_shards(self, shards: Iterable[int], num_shards: int) -> Iterator[tuple[int, dict]]:
        """``(shard, document)`` for every document in ``shards``."""
        wanted = set(shards)
        if len(wanted) >= _FETCH_BY_ID_FRACTION * num_shards:
            for doc in self.collection.find({}, _PROJECTION, batch_size=self.batch_size):
                shard = self._shard(doc, num_shards)
                if shard in wanted:
                    yield shard, doc
            return
        ids = [
            d["doc_id"]
            for d in self.collection.find({}, {"doc_id": 1, "_id": 0}, batch_size=10 * self.batch_size)
            if "doc_id" in d and d["doc_id"] is not None and self._shard(d, num_shards) in wanted
        ]
        for doc in self.iter_by_ids(ids):
            yield self._shard(doc, num_shards), doc

    def iter_by_ids(self, doc_ids: list[Any]) -> Iterator[dict]:
        for start in range(0, len(doc_ids), self.batch_size):
            batch = doc_ids[start : start + self.batch_size]
            yield from self.collection.find({"doc_id": {"$in": batch}}, _PROJECTION)

    @staticmethod
    def _shard(doc: dict, num_shards: int) -> int:
        doc_id = doc.get("doc_id")
        # Documents without a doc_id go to shard 0 so that some run reports them.
        return 0 if doc_id is None else shard_of(str(doc_id), num_shards)
