"""The read API for services: float32 vectors by doc_id, with version, time and content hash."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from embedding_assets.lib import codec
from embedding_assets.lib import quantization as q
from embedding_assets.stores.control_plane import ControlPlaneLost
from embedding_assets.stores.feature_store import FeatureStore, connect

T = TypeVar("T")


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
    """Reads one version: the one given (pinned), else the store's active version, followed: a
    switch (``embedding-assets activate``) is seen within ``refresh_seconds`` (one GET per
    interval, none in between)."""

    def __init__(
        self, store: FeatureStore, version: str | None = None, *, refresh_seconds: float = 5.0
    ) -> None:
        self.store = store
        self.pinned = version is not None
        self.refresh_seconds = refresh_seconds
        self._use(version or self._active())

    @classmethod
    def from_url(
        cls, url: str, version: str | None = None, *, refresh_seconds: float = 5.0
    ) -> EmbeddingClient:
        return cls(FeatureStore(connect(url)), version, refresh_seconds=refresh_seconds)

    def _active(self) -> str:
        resolved = self.store.control.active_version()
        if resolved is None:
            raise LookupError("the feature store has no active version yet; materialize first")
        return resolved

    def _use(self, version: str) -> None:
        spec = self.store.control.versions().get(version)
        self.version = version
        self.version_id = spec.version_id if spec else None
        self._calibration = self.store.control.calibration(version)
        self._checked = time.monotonic()

    def _follow(self) -> None:
        """Switch to the active version if it changed (at most once per refresh interval)."""
        if self.pinned or time.monotonic() - self._checked < self.refresh_seconds:
            return
        active = self._active()
        self._checked = time.monotonic()
        if active != self.version:
            self._use(active)

    def _read(self, read: Callable[[str], T]) -> T:
        """``read(version)`` of the version followed; if that version's keys are gone (removed
        by cleanup), the active one is looked up at once and read instead."""
        self._follow()
        try:
            return read(self.version)
        except ControlPlaneLost:
            if self.pinned:
                raise
            self._checked = float("-inf")
            self._follow()
            return read(self.version)

    def get(self, doc_id: str) -> StoredEmbedding | None:
        raw = self._read(lambda version: self.store.entries.read_one(version, doc_id))
        return None if raw is None else self._decode(doc_id, raw)

    def get_many(self, doc_ids: Sequence[str]) -> list[StoredEmbedding | None]:
        values = self._read(lambda version: self.store.entries.read(version, doc_ids))
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
