"""The feature store's control plane in Redis: versions, the active pointer, calibration, layout.

Keys (beside the entries of ``redis_entries.py``):
    doc_emb_meta:versions               hash version -> EmbeddingSpec JSON
    doc_emb_meta:active                 version tag readers follow
    doc_emb_meta:{version}:calibration  int8 ranges of the version, float32 lo then hi
    doc_emb_meta:{version}:buckets      how many buckets the version's entries are spread over
    doc_emb_meta:{version}:dead_letters hash doc_id -> why it has no faithful entry
"""

from __future__ import annotations

import redis

from embedding_assets.lib.quantization import Int8Calibration
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.retrying import transient
from embedding_assets.stores.dead_letters import DeadLetters

META_PREFIX = "doc_emb_meta"
VERSIONS_KEY = f"{META_PREFIX}:versions"
ACTIVE_KEY = f"{META_PREFIX}:active"
DEFAULT_BUCKETS = 16_384  # ~64 entries per bucket at 1M documents: HGET scans a short listpack


def calibration_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:calibration"


def buckets_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:buckets"


def dead_letter_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:dead_letters"


class ControlPlane:
    def __init__(self, client: redis.Redis, *, buckets: int = DEFAULT_BUCKETS) -> None:
        self.client = client
        self.default_buckets = buckets
        self._buckets: dict[str, int] = {}

    # -- versions ---------------------------------------------------------------------------
    @transient
    def register_version(self, spec: EmbeddingSpec) -> None:
        self.client.hsetnx(VERSIONS_KEY, spec.tag, spec.to_json())

    @transient
    def versions(self) -> dict[str, EmbeddingSpec]:
        raw = self.client.hgetall(VERSIONS_KEY)
        return {k.decode(): EmbeddingSpec.from_json(v) for k, v in raw.items()}

    @transient
    def active_version(self) -> str | None:
        raw = self.client.get(ACTIVE_KEY)
        return raw.decode() if raw else None

    @transient
    def set_active(self, version: str) -> None:
        if version not in self.versions():
            raise LookupError(f"unknown version {version!r}")
        self.client.set(ACTIVE_KEY, version)

    @transient
    def activate_if_none(self, version: str) -> str:
        """The first version published becomes active; later ones wait for an explicit switch."""
        self.client.set(ACTIVE_KEY, version, nx=True)
        return self.active_version() or version

    def forget(self, version: str) -> None:
        """Remove the version's control keys and registration (its entries are the entry store's)."""
        self.client.unlink(calibration_key(version), buckets_key(version), dead_letter_key(version))
        self.client.hdel(VERSIONS_KEY, version)
        self._buckets.pop(version, None)

    # -- calibration ------------------------------------------------------------------------
    @transient
    def calibration(self, version: str) -> Int8Calibration | None:
        raw = self.client.get(calibration_key(version))
        return Int8Calibration.from_bytes(raw) if raw else None

    @transient
    def ensure_calibration(self, version: str, candidate: Int8Calibration) -> Int8Calibration:
        """Store ``candidate`` unless the version has one already; return the stored one.

        First writer wins, so concurrent runs of one version always agree on codes.
        """
        self.client.set(calibration_key(version), candidate.to_bytes(), nx=True)
        stored = self.calibration(version)
        assert stored is not None
        return stored

    # -- layout -----------------------------------------------------------------------------
    @transient
    def buckets(self, version: str) -> int:
        """The version's bucket count: fixed by its first writer or reader, so all agree."""
        if version not in self._buckets:
            self.client.set(buckets_key(version), self.default_buckets, nx=True)
            self._buckets[version] = int(self.client.get(buckets_key(version)))
        return self._buckets[version]

    # -- dead letters -----------------------------------------------------------------------
    def dead_letters(self, version: str) -> DeadLetters:
        return DeadLetters(self.client, version, dead_letter_key(version))
