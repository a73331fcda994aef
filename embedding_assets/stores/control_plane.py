"""The feature store's control plane in Redis: versions, the active pointer, calibration, layout.

These keys carry no TTL and are never created by a reader: a reader that finds one missing fails
with ``ControlPlaneLost`` rather than guess (a guessed bucket count finds no entry; a recomputed
calibration decodes old codes wrongly). The pipeline keeps a copy of each version's keys beside
its shard state (``VersionCopy``) and restores a lost key from it before it publishes.

Keys (beside the entries of ``redis_entries.py``):
    doc_emb_meta:versions               hash version -> EmbeddingSpec JSON
    doc_emb_meta:active                 version tag readers follow
    doc_emb_meta:{version}:calibration  int8 ranges of the version, float32 lo then hi
    doc_emb_meta:{version}:buckets      how many buckets the version's entries are spread over
    doc_emb_meta:{version}:dead_letters hash doc_id -> why it has no faithful entry
    doc_emb_meta:{version}:query_model  where clients find the model that embeds queries (JSON)
    doc_emb_meta:{version}:quality      the version's score on the labeled set, when built (JSON)
    doc_emb_meta:{version}:quality_vectors  the labeled set's float32 vectors it was computed from
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np
import redis

from embedding_assets.lib.quantization import Int8Calibration
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.retrying import transient
from embedding_assets.stores.dead_letters import DeadLetters

META_PREFIX = "doc_emb_meta"
VERSIONS_KEY = f"{META_PREFIX}:versions"
ACTIVE_KEY = f"{META_PREFIX}:active"
# version -> when it stopped being the active one (server seconds): cleanup waits for followers
INACTIVE_KEY = f"{META_PREFIX}:inactive_since"
DEFAULT_BUCKETS = 16_384  # ~64 entries per bucket at 1M documents: HGET scans a short listpack


def calibration_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:calibration"


def buckets_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:buckets"


def canary_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:canary"


def query_model_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:query_model"


def quality_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:quality"


def quality_vectors_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:quality_vectors"


def model_calibration_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:model_calibration"


def dead_letter_key(version: str) -> str:
    return f"{META_PREFIX}:{version}:dead_letters"


class ControlPlaneLost(RuntimeError):
    """A control key of a version is missing (evicted, flushed, deleted)."""


class ControlPlaneConflict(RuntimeError):
    """A control key differs from the copy the version's entries were written with."""


@dataclass(frozen=True)
class VersionCopy:
    """What a version's entries need to be read, kept apart from Redis."""

    spec: EmbeddingSpec
    buckets: int
    calibration: bytes | None

    def to_json(self) -> str:
        calibration = base64.b64encode(self.calibration).decode() if self.calibration else None
        return json.dumps(
            {"spec": json.loads(self.spec.to_json()), "buckets": self.buckets, "calibration": calibration}
        )

    @classmethod
    def from_json(cls, raw: str) -> VersionCopy:
        data = json.loads(raw)
        calibration = base64.b64decode(data["calibration"]) if data["calibration"] else None
        return cls(EmbeddingSpec.from_json(json.dumps(data["spec"])), int(data["buckets"]), calibration)


def encode_canary(vectors: np.ndarray) -> bytes:
    """Canary vectors as bytes: their dimension (u32), then float32 rows."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    return np.asarray([data.shape[1]], dtype=np.uint32).tobytes() + data.tobytes()


def decode_canary(raw: bytes) -> np.ndarray:
    dimension = int(np.frombuffer(raw[:4], dtype=np.uint32)[0])
    return np.frombuffer(raw[4:], dtype=np.float32).reshape(-1, dimension)


class ControlPlane:
    def __init__(self, client: redis.Redis, *, buckets: int = DEFAULT_BUCKETS) -> None:
        self.client = client
        self.default_buckets = buckets
        self._buckets: dict[str, int] = {}

    # -- versions ---------------------------------------------------------------------------
    @transient
    def register_version(self, spec: EmbeddingSpec, *, layout: bool = True) -> None:
        """Register a version and (``layout``) fix its bucket layout (first writer wins). Only the
        publishing step fixes layouts, after restoring lost keys from the version's copy."""
        self.client.hsetnx(VERSIONS_KEY, spec.tag, spec.to_json())
        if layout:
            self.ensure_layout(spec.tag)

    @transient
    def ensure_layout(self, version: str) -> int:
        """Fix the version's bucket count unless it has one; return the one it has."""
        self.client.set(buckets_key(version), self.default_buckets, nx=True)
        return self.buckets(version)

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
        """Makes ``version`` the one readers follow, and records when the one before stopped
        being it (``inactive_since``)."""
        if version not in self.versions():
            raise LookupError(f"unknown version {version!r}")
        previous = self.client.getset(ACTIVE_KEY, version)
        if previous and previous.decode() != version:
            self.client.hset(INACTIVE_KEY, previous.decode(), int(self.client.time()[0]))
        self.client.hdel(INACTIVE_KEY, version)

    @transient
    def inactive_since(self, version: str) -> int | None:
        """When ``version`` stopped being the active one (server seconds), if it ever was."""
        raw = self.client.hget(INACTIVE_KEY, version)
        return int(raw) if raw else None

    @transient
    def activate_if_none(self, version: str) -> str:
        """The first version published becomes active; later ones wait for an explicit switch."""
        self.client.set(ACTIVE_KEY, version, nx=True)
        return self.active_version() or version

    # -- model identity: a remote model's vectors of fixed texts (embedders/remote.py) ---------
    @transient
    def canary(self, version: str) -> np.ndarray | None:
        raw = self.client.get(canary_key(version))
        return decode_canary(raw) if raw else None

    @transient
    def ensure_canary(self, version: str, vectors: np.ndarray) -> np.ndarray:
        """Store ``vectors`` unless the version has canaries; return the stored ones."""
        self.client.set(canary_key(version), encode_canary(vectors), nx=True)
        stored = self.canary(version)
        assert stored is not None
        return stored

    # -- query side: the model that embeds queries, and the version's retrieval quality --------
    @transient
    def set_query_model(self, version: str, source: dict[str, str]) -> None:
        """Where the model of the version's queries can be loaded from (a hint: clients check its
        identity against the version before they use it)."""
        self.client.set(query_model_key(version), json.dumps(source, sort_keys=True))

    @transient
    def query_model(self, version: str) -> dict[str, str] | None:
        raw = self.client.get(query_model_key(version))
        return json.loads(raw) if raw else None

    @transient
    def set_quality(self, version: str, record: dict, vectors: np.ndarray) -> None:
        """The version's labeled-set score and the float vectors it came from (the check re-scores
        them as stored, without the model)."""
        self.client.set(quality_vectors_key(version), encode_canary(vectors))  # first: a record has them
        self.client.set(quality_key(version), json.dumps(record, sort_keys=True))

    @transient
    def quality(self, version: str) -> dict | None:
        raw = self.client.get(quality_key(version))
        return json.loads(raw) if raw else None

    @transient
    def quality_vectors(self, version: str) -> np.ndarray | None:
        raw = self.client.get(quality_vectors_key(version))
        return decode_canary(raw) if raw else None

    def forget(self, version: str) -> None:
        """Remove the version's control keys and registration (its entries are the entry store's)."""
        self.client.unlink(
            calibration_key(version),
            buckets_key(version),
            dead_letter_key(version),
            canary_key(version),
            query_model_key(version),
            quality_key(version),
            quality_vectors_key(version),
            model_calibration_key(version),
        )
        self.client.hdel(VERSIONS_KEY, version)
        self.client.hdel(INACTIVE_KEY, version)
        self._buckets.pop(version, None)

    # -- the model's own int8 calibration: windows of the deployment's documents -----------------
    @transient
    def model_calibration(self, version: str) -> list[str] | None:
        raw = self.client.get(model_calibration_key(version))
        return list(json.loads(raw)) if raw else None

    @transient
    def ensure_model_calibration(self, version: str, texts: list[str]) -> list[str]:
        """The version's calibration windows: the first writer's, whoever asks (SET NX)."""
        self.client.set(model_calibration_key(version), json.dumps(texts), nx=True)
        stored = self.model_calibration(version)
        if stored is None:
            raise ControlPlaneLost(f"{model_calibration_key(version)} vanished as it was written")
        return stored

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
    def buckets(self, version: str) -> int:
        """The version's bucket count, as its first writer fixed it; never created here."""
        if version not in self._buckets:
            raw = transient(self.client.get)(buckets_key(version))
            if raw is None:
                raise ControlPlaneLost(
                    f"version {version} has no bucket layout ({buckets_key(version)} is missing): the "
                    "server lost control keys; the next pipeline run restores them from its copy"
                )
            self._buckets[version] = int(raw)
        return self._buckets[version]

    # -- durability -------------------------------------------------------------------------
    def reconcile(self, spec: EmbeddingSpec, copy: VersionCopy | None) -> list[str]:
        """Make the version's keys agree with ``copy`` (the one its entries were written with):
        missing keys are restored from it, differing ones refused. Returns what was restored."""
        restored = []
        if copy is None:
            self.register_version(spec)
            return restored
        if copy.spec.tag != spec.tag:
            raise ValueError(f"copy of {copy.spec.tag} given for {spec.tag}")
        pairs = [(buckets_key(spec.tag), str(copy.buckets).encode())]
        if copy.calibration is not None:
            pairs.append((calibration_key(spec.tag), copy.calibration))
        for key, wanted in pairs:
            if transient(self.client.set)(key, wanted, nx=True):
                restored.append(key)
            elif transient(self.client.get)(key) != wanted:
                raise ControlPlaneConflict(
                    f"{key} differs from the copy {spec.tag}'s entries were written with; refusing to "
                    "publish (restore the key from the copy, or retire the version with cleanup)"
                )
        if transient(self.client.hsetnx)(VERSIONS_KEY, spec.tag, spec.to_json()):
            restored.append(f"{VERSIONS_KEY}[{spec.tag}]")
        self._buckets.pop(spec.tag, None)
        return restored

    def copy_of(self, spec: EmbeddingSpec) -> VersionCopy:
        """The version's keys as they are now (after a publish), to keep apart from Redis."""
        calibration = transient(self.client.get)(calibration_key(spec.tag))
        return VersionCopy(spec, self.buckets(spec.tag), calibration)

    def eviction_policy(self) -> str | None:
        """The server's maxmemory-policy, from INFO (which a user without CONFIG may run; None
        where neither answers); on a cluster, the first master's that may evict keys without a
        TTL, else the first master's."""
        from embedding_assets.stores.redis_entries import servers

        policies = []
        for server in servers(self.client):
            try:
                policy = transient(server.info)("memory").get("maxmemory_policy")
                if policy is None:  # a server whose INFO leaves it out
                    policy = transient(server.config_get)("maxmemory-policy").get("maxmemory-policy")
            except redis.ResponseError:
                return None
            policies.append(str(policy))
        return next((p for p in policies if p.startswith("allkeys-")), policies[0]) if policies else None

    # -- dead letters -----------------------------------------------------------------------
    def dead_letters(self, version: str) -> DeadLetters:
        return DeadLetters(self.client, version, dead_letter_key(version))
