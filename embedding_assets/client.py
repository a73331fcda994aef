"""The read API for services: float32 vectors by doc_id, with version, time and content hash."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q
from embedding_assets.lib.feature_store import FeatureStore


@dataclass(frozen=True)
class StoredEmbedding:
    doc_id: str
    vector: np.ndarray
    version: str
    computed_at: dt.datetime
    content_hash: int
    source_modified_at: dt.datetime


class EmbeddingClient:
    """Reads one version: the one given, else the store's active version."""

    def __init__(self, store: FeatureStore, version: str | None = None) -> None:
        self.store = store
        resolved = version or store.active_version()
        if resolved is None:
            raise LookupError("the feature store has no active version yet; materialize first")
        self.version = resolved
        spec = store.versions().get(resolved)
        self.version_id = spec.version_id if spec else None
        self._calibration = store.calibration(resolved)

    @classmethod
    def from_url(cls, url: str, version: str | None = None) -> EmbeddingClient:
        return cls(FeatureStore(redis.Redis.from_url(url)), version)

    def get(self, doc_id: str) -> StoredEmbedding | None:
        raw = self.store.read_one(self.version, doc_id)
        return None if raw is None else self._decode(doc_id, raw)

    def get_many(self, doc_ids: Sequence[str]) -> list[StoredEmbedding | None]:
        return [
            None if raw is None else self._decode(doc_id, raw)
            for doc_id, raw in zip(doc_ids, self.store.read_many(self.version, doc_ids), strict=True)
        ]

    def _decode(self, doc_id: str, raw: bytes) -> StoredEmbedding:
        header = codec.decode_header(raw)
        if self.version_id is not None and header.version_id != self.version_id:
            raise codec.CodecError(f"{doc_id}: record of another version ({header.version_id:#010x})")
        payload = codec.decode_payload(raw, header)
        if header.codec == q.INT8:
            if self._calibration is None:
                raise codec.CodecError(f"version {self.version} has no int8 calibration")
            vector = q.dequantize_int8(payload, self._calibration)
        else:
            vector = q.dequantize_binary(payload, header.dimension)
        return StoredEmbedding(
            doc_id=doc_id,
            vector=vector,
            version=self.version,
            computed_at=dt.datetime.fromtimestamp(header.computed_at, dt.UTC),
            content_hash=header.content_hash,
            source_modified_at=dt.datetime.fromtimestamp(header.source_ms / 1000, dt.UTC),
        )
