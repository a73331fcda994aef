"""The read API for services: float32 vectors by doc_id, with version, time and content hash."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q
from embedding_assets.stores.feature_store import FeatureStore


@dataclass(slots=True)
class StoredEmbedding:
    """One entry as read. Times are kept as numbers and turned into datetimes when asked for:
    a get_many of 100 would otherwise spend a third of its client time making datetimes."""

    doc_id: str
    vector: np.ndarray
    version: str
    computed_at_s: int
    content_hash: int
    source_ms: int

    @property
    def computed_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.computed_at_s, dt.UTC)

    @property
    def source_modified_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.source_ms / 1000, dt.UTC)


class EmbeddingClient:
    """Reads one version: the one given, else the store's active version."""

    def __init__(self, store: FeatureStore, version: str | None = None) -> None:
        self.store = store
        resolved = version or store.control.active_version()
        if resolved is None:
            raise LookupError("the feature store has no active version yet; materialize first")
        self.version = resolved
        spec = store.control.versions().get(resolved)
        self.version_id = spec.version_id if spec else None
        self._calibration = store.control.calibration(resolved)

    @classmethod
    def from_url(cls, url: str, version: str | None = None) -> EmbeddingClient:
        return cls(FeatureStore(redis.Redis.from_url(url)), version)

    def get(self, doc_id: str) -> StoredEmbedding | None:
        raw = self.store.entries.read_one(self.version, doc_id)
        return None if raw is None else self._decode(doc_id, raw)

    def get_many(self, doc_ids: Sequence[str]) -> list[StoredEmbedding | None]:
        values = self.store.entries.read(self.version, doc_ids)
        out: list[StoredEmbedding | None] = [None] * len(doc_ids)
        by_size: dict[int, list[int]] = {}
        for i, raw in enumerate(values):
            if raw is not None:
                by_size.setdefault(len(raw), []).append(i)
        for positions in by_size.values():
            raws = [values[i] for i in positions]
            try:
                headers, payloads = codec.decode_many(raws)  # type: ignore[arg-type]
            except codec.CodecError:  # odd records: one at a time, so the error names the document
                for i in positions:
                    out[i] = self._decode(doc_ids[i], values[i])  # type: ignore[arg-type]
                continue
            foreign = self.version_id is not None and (headers["version_id"] != self.version_id).any()
            if foreign:
                i = positions[int(np.argmax(headers["version_id"] != self.version_id))]
                self._decode(doc_ids[i], values[i])  # type: ignore[arg-type] # raises, naming it
            vectors = self._vectors(
                codec.CODEC_NAMES[int(headers["codec"][0])], payloads, int(headers["dimension"][0])
            )
            columns = zip(
                positions,
                vectors,
                headers["computed_at"].tolist(),
                headers["content_hash"].tolist(),
                headers["source_ms"].tolist(),
                strict=True,
            )
            for i, vector, computed_at, content_hash, source_ms in columns:
                out[i] = StoredEmbedding(
                    doc_ids[i], vector, self.version, computed_at, content_hash, source_ms
                )
        return out

    def _vectors(self, codec_name: str, payloads: np.ndarray, dimension: int) -> np.ndarray:
        if codec_name == q.INT8 and self._calibration is None:
            raise codec.CodecError(f"version {self.version} has no int8 calibration")
        return q.dequantize(codec_name, payloads, self._calibration, dimension)

    def _decode(self, doc_id: str, raw: bytes) -> StoredEmbedding:
        header = codec.decode_header(raw)
        if self.version_id is not None and header.version_id != self.version_id:
            raise codec.CodecError(f"{doc_id}: record of another version ({header.version_id:#010x})")
        vector = self._vectors(header.codec, codec.decode_payload(raw, header), header.dimension)
        return StoredEmbedding(
            doc_id=doc_id,
            vector=vector,
            version=self.version,
            computed_at_s=header.computed_at,
            content_hash=header.content_hash,
            source_ms=header.source_ms,
        )
