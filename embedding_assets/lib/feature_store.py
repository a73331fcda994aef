"""The Redis feature store: entry keys, version registry, calibration, pipelined writes.

Keys:
    doc_emb:{version}:{doc_id}          one binary record per document (lib/codec.py), with TTL
    doc_emb_meta:versions               hash version -> EmbeddingSpec JSON
    doc_emb_meta:{version}:calibration  int8 ranges of the version, float32 lo then hi
    doc_emb_meta:active                 version tag readers follow
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import redis

from embedding_assets.lib.quantization import Int8Calibration
from embedding_assets.lib.versioning import EmbeddingSpec

ENTRY_PREFIX = "doc_emb"
META_PREFIX = "doc_emb_meta"
VERSIONS_KEY = f"{META_PREFIX}:versions"
ACTIVE_KEY = f"{META_PREFIX}:active"
DEFAULT_TTL_SECONDS = 30 * 24 * 3600


def entry_key(version: str, doc_id: str) -> str:
    return f"{ENTRY_PREFIX}:{version}:{doc_id}"


def calibration_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:calibration"


class FeatureStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        write_batch_size: int = 1000,
    ) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds
        self.write_batch_size = write_batch_size

    @classmethod
    def from_url(cls, url: str, **kwargs: int) -> FeatureStore:
        return cls(redis.Redis.from_url(url, socket_timeout=30), **kwargs)

    # -- versions -------------------------------------------------------------------------
    def register_version(self, spec: EmbeddingSpec) -> None:
        self.client.hsetnx(VERSIONS_KEY, spec.tag, spec.to_json())

    def versions(self) -> dict[str, EmbeddingSpec]:
        raw = self.client.hgetall(VERSIONS_KEY)
        return {k.decode(): EmbeddingSpec.from_json(v) for k, v in raw.items()}

    def active_version(self) -> str | None:
        raw = self.client.get(ACTIVE_KEY)
        return raw.decode() if raw else None

    def activate_if_none(self, version: str) -> str:
        """The first version published becomes active; later ones wait for an explicit switch."""
        self.client.set(ACTIVE_KEY, version, nx=True)
        return self.active_version() or version

    # -- calibration ------------------------------------------------------------------------
    def calibration(self, version: str) -> Int8Calibration | None:
        raw = self.client.get(calibration_key(version))
        return Int8Calibration.from_bytes(raw) if raw else None

    def ensure_calibration(self, version: str, candidate: Int8Calibration) -> Int8Calibration:
        """Store ``candidate`` unless the version has one already; return the stored one.

        First writer wins, so concurrent runs of one version always agree on codes.
        """
        self.client.set(calibration_key(version), candidate.to_bytes(), nx=True)
        stored = self.calibration(version)
        assert stored is not None
        return stored

    # -- entries ------------------------------------------------------------------------------
    def write(self, version: str, doc_ids: Sequence[str], values: Sequence[bytes]) -> int:
        """Pipelined SET with expiry, in batches. Returns the bytes of values written."""
        written = 0
        for start in range(0, len(doc_ids), self.write_batch_size):
            pipe = self.client.pipeline(transaction=False)
            for doc_id, value in zip(
                doc_ids[start : start + self.write_batch_size],
                values[start : start + self.write_batch_size],
                strict=True,
            ):
                pipe.set(entry_key(version, doc_id), value, ex=self.ttl_seconds)
                written += len(value)
            pipe.execute()
        return written

    def read_many(self, version: str, doc_ids: Sequence[str]) -> list[bytes | None]:
        if not doc_ids:
            return []
        return self.client.mget([entry_key(version, d) for d in doc_ids])

    def delete(self, version: str, doc_ids: Sequence[str]) -> int:
        deleted = 0
        for start in range(0, len(doc_ids), self.write_batch_size):
            keys = [entry_key(version, d) for d in doc_ids[start : start + self.write_batch_size]]
            deleted += int(self.client.unlink(*keys)) if keys else 0
        return deleted

    def scan_doc_ids(self, version: str) -> Iterator[str]:
        prefix = f"{ENTRY_PREFIX}:{version}:"
        for key in self.client.scan_iter(match=f"{prefix}*", count=1000):
            yield key.decode()[len(prefix) :]

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])
