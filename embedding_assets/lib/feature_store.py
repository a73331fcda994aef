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

from embedding_assets.lib import codec
from embedding_assets.lib.quantization import Int8Calibration
from embedding_assets.lib.retrying import transient
from embedding_assets.lib.versioning import EmbeddingSpec

ENTRY_PREFIX = "doc_emb"
META_PREFIX = "doc_emb_meta"
VERSIONS_KEY = f"{META_PREFIX}:versions"
ACTIVE_KEY = f"{META_PREFIX}:active"
DEFAULT_TTL_SECONDS = 30 * 24 * 3600


# Write unless the stored entry comes from a later state of its document (source_ms at
# bytes 20..27 of the record, little-endian i64). KEYS: entries; ARGV[1]: ttl; ARGV[1+i]: value.
_WRITE_IF_NOT_OLDER = """
local ttl = tonumber(ARGV[1])
local written = 0
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 1]
  local current = redis.call('GETRANGE', key, 20, 27)
  local ok = true
  if string.len(current) == 8 then
    if struct.unpack('<i8', current) > struct.unpack('<i8', string.sub(value, 21, 28)) then
      ok = false
    end
  end
  if ok then
    redis.call('SET', key, value, 'EX', ttl)
    written = written + 1
  end
end
return written
"""

# Delete only entries still at the source state the caller saw. ARGV[i]: that source_ms.
_DELETE_IF_NOT_NEWER = """
local deleted = 0
for i, key in ipairs(KEYS) do
  local current = redis.call('GETRANGE', key, 20, 27)
  if string.len(current) == 8 and struct.unpack('<i8', current) <= tonumber(ARGV[i]) then
    redis.call('UNLINK', key)
    deleted = deleted + 1
  end
end
return deleted
"""


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
        self._write_if_not_older = client.register_script(_WRITE_IF_NOT_OLDER)
        self._delete_if_not_newer = client.register_script(_DELETE_IF_NOT_NEWER)

    @classmethod
    def from_url(cls, url: str, **kwargs: int) -> FeatureStore:
        return cls(redis.Redis.from_url(url, socket_timeout=30), **kwargs)

    # -- versions -------------------------------------------------------------------------
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

    def drop_version(self, version: str) -> int:
        """Remove every key of a version (entries, calibration, registration)."""
        if version == self.active_version():
            raise ValueError(f"{version} is the active version; activate another one first")
        removed = 0
        batch: list[str] = []
        for doc_id in self.scan_doc_ids(version):
            batch.append(entry_key(version, doc_id))
            if len(batch) >= 1000:
                removed += int(self.client.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(self.client.unlink(*batch))
        self.client.unlink(calibration_key(version))
        self.client.hdel(VERSIONS_KEY, version)
        return removed

    @transient
    def activate_if_none(self, version: str) -> str:
        """The first version published becomes active; later ones wait for an explicit switch."""
        self.client.set(ACTIVE_KEY, version, nx=True)
        return self.active_version() or version

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

    # -- entries ------------------------------------------------------------------------------
    def write_if_not_older(self, version: str, doc_ids: Sequence[str], values: Sequence[bytes]) -> int:
        """Like :meth:`write`, but an entry computed from a newer source state is never overwritten.

        Returns how many entries were written; the rest were superseded by another run.
        """
        written = 0
        step = min(self.write_batch_size, 500)
        for start in range(0, len(doc_ids), step):
            keys = [entry_key(version, d) for d in doc_ids[start : start + step]]
            written += self._eval(
                self._write_if_not_older, keys, [self.ttl_seconds, *values[start : start + step]]
            )
        return written

    @transient
    def _eval(self, script: object, keys: list[str], args: list) -> int:
        return int(script(keys=keys, args=args))  # type: ignore[operator]

    def delete_if_not_newer(self, version: str, doc_ids: Sequence[str], source_ms: Sequence[int]) -> int:
        """Delete entries whose source state is at most the one given (a newer one stays)."""
        deleted = 0
        step = min(self.write_batch_size, 500)
        for start in range(0, len(doc_ids), step):
            keys = [entry_key(version, d) for d in doc_ids[start : start + step]]
            deleted += self._eval(self._delete_if_not_newer, keys, list(source_ms[start : start + step]))
        return deleted

    def read_headers(self, version: str, doc_ids: Sequence[str]) -> list[codec.RecordHeader | None]:
        """Headers only (GETRANGE), so planning a shard reads 28 bytes per entry, not the vectors."""
        out: list[codec.RecordHeader | None] = []
        step = 1000
        for start in range(0, len(doc_ids), step):
            for raw in self._getranges(version, doc_ids[start : start + step]):
                try:
                    out.append(codec.parse_header(raw) if raw else None)
                except codec.CodecError:
                    out.append(None)  # not ours or corrupt: treated as missing and rewritten
        return out

    @transient
    def _getranges(self, version: str, doc_ids: Sequence[str]) -> list[bytes]:
        pipe = self.client.pipeline(transaction=False)
        for doc_id in doc_ids:
            pipe.getrange(entry_key(version, doc_id), 0, codec.HEADER_SIZE - 1)
        return pipe.execute()

    def read_many(self, version: str, doc_ids: Sequence[str]) -> list[bytes | None]:
        if not doc_ids:
            return []
        return self.client.mget([entry_key(version, d) for d in doc_ids])

    def scan_doc_ids(self, version: str) -> Iterator[str]:
        return iter(self._scan_ids(version))

    @transient
    def _scan_ids(self, version: str) -> list[str]:
        prefix = f"{ENTRY_PREFIX}:{version}:"
        return [k.decode()[len(prefix) :] for k in self.client.scan_iter(match=f"{prefix}*", count=1000)]

    @transient
    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])
