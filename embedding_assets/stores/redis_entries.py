"""Entries in Redis: each version's records in bucketed hashes, written and deleted by guarded Lua.

Keys:
    doc_emb:{version}:b:{bucket}        hash doc_id -> binary record (lib/codec.py); TTL per bucket
                                        and "\x00del:" + doc_id -> when its deletion was seen
                                        (u32 server seconds): a tombstone, so that a run that
                                        read the document earlier cannot write it back
    doc_emb:{{version}:g}:b:{bucket}    the same on a Redis Cluster: the hash tag {version:g},
                                        g = bucket mod 1024, puts a group of buckets in one slot,
                                        so every script call (one per group) touches one slot

On a cluster, scripts run once per slot group and reads go through a cluster pipeline (one round
trip per node); elsewhere one script call covers a whole batch.

Why buckets: a key per document costs ~100 B of key, object and expiry overhead on top of the
record; ~64 records in one listpack-encoded hash cost ~20 B each (docs/benchmarks.md has the
measurements). Expiry is per bucket, refreshed by every write to it; what per-document expiry
did (reclaim entries of documents nobody will write again) is done by the deletion sensor, the
daily sweep's orphan reconciliation and ``cleanup`` of retired versions. The bucket count of a
version is fixed in the control plane (control_plane.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import redis
import xxhash
from redis.crc import key_slot

from embedding_assets.lib import codec
from embedding_assets.retrying import TRANSIENT, transient

ENTRY_PREFIX = "doc_emb"
DEFAULT_TTL_SECONDS = 30 * 24 * 3600
# Slot groups of a version on a cluster: enough to spread over hundreds of masters, few enough
# that a batch of 50,000 entries makes ~50-entry script calls.
SLOT_GROUPS = 1024
CLUSTER_BATCH = 50_000
TOMBSTONE = "\x00del:"  # field prefix of tombstones; no doc_id starts with a NUL byte

# Write unless the stored entry comes from a later state of its document: its source_ms (bytes
# 20..27 of the record, little-endian i64) is later than the new one's AND it was written
# (computed_at, bytes 8..11, u32) no earlier than the new value's document was read: an entry
# written before that read describes an older state whatever its modified_at says
# (lib/staleness.py, read_after_write). Nor over a tombstone of a deletion seen at or after the
# new value's read. KEYS[i]: bucket of entry i; ARGV[1]: ttl; ARGV[3i-1], ARGV[3i], ARGV[3i+1]:
# doc_id, record and read time (server seconds, 0: unknown) of entry i.
_WRITE_IF_NOT_OLDER = """
local ttl = tonumber(ARGV[1])
local written = 0
local touched = {}
for i, key in ipairs(KEYS) do
  local field = ARGV[3 * i - 1]
  local value = ARGV[3 * i]
  local read_s = tonumber(ARGV[3 * i + 1])
  local current = redis.call('HGET', key, field)
  local deleted_s = tonumber(redis.call('HGET', key, '\\0del:' .. field))
  local ok = not (deleted_s and read_s <= deleted_s)
  if ok and current and string.len(current) >= 28 then
    local stored_ms = struct.unpack('<i8', string.sub(current, 21, 28))
    if stored_ms > struct.unpack('<i8', string.sub(value, 21, 28)) then
      local written_s = struct.unpack('<I4', string.sub(current, 9, 12))
      ok = read_s > written_s
    end
  end
  if ok then
    redis.call('HSET', key, field, value)
    if deleted_s then redis.call('HDEL', key, '\\0del:' .. field) end
    written = written + 1
    touched[key] = true
  end
end
for key in pairs(touched) do
  redis.call('EXPIRE', key, ttl)
end
return written
"""

# Delete entries of documents seen gone. ARGV[3i-2], ARGV[3i-1], ARGV[3i]: the doc_id, the
# source_ms the caller saw in its entry, and when the deletion was seen (server seconds). With
# that time: delete an entry computed from an earlier read (computed_at, bytes 8..11) and leave
# a tombstone, so that a run which read the document earlier cannot write it back. Without it
# (0): delete only an entry still at the source state the caller saw.
_DELETE_IF_NOT_NEWER = """
local deleted = 0
for i, key in ipairs(KEYS) do
  local field = ARGV[3 * i - 2]
  local seen_s = tonumber(ARGV[3 * i])
  local current = redis.call('HGET', key, field)
  local valid = current and string.len(current) >= 28
  local ok
  if seen_s > 0 then
    ok = current and (not valid or struct.unpack('<I4', string.sub(current, 9, 12)) < seen_s)
    local tomb = '\\0del:' .. field
    local before = tonumber(redis.call('HGET', key, tomb))
    if (not current or ok) and (not before or before < seen_s) then
      redis.call('HSET', key, tomb, seen_s)
    end
  else
    ok = valid and struct.unpack('<i8', string.sub(current, 21, 28)) <= tonumber(ARGV[3 * i - 1])
  end
  if ok then
    redis.call('HDEL', key, field)
    deleted = deleted + 1
  end
end
return deleted
"""


# Many entries in one round trip and one command: a pipeline of HMGETs costs the client
# ~15 us per command to pack and parse. KEYS[i]: bucket of entry i; ARGV[i]: its doc_id.
_READ_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, ARGV[i])
end
return out
"""

# The same, but only each record's 28-byte header: planning a publish or checking coverage of a
# million entries moves 28 MB instead of 412 MB.
_READ_HEADERS = """
local out = {}
for i, key in ipairs(KEYS) do
  local value = redis.call('HGET', key, ARGV[i])
  out[i] = value and string.sub(value, 1, 28)
end
return out
"""


def bucket_of(doc_id: str, buckets: int) -> int:
    """Seeded apart from the shard hash, so a shard's documents spread over every bucket."""
    return xxhash.xxh3_64_intdigest(doc_id.encode(), seed=0x5EED) % buckets


def bucket_key(version: str, bucket: int, cluster: bool = False) -> str:
    if cluster:
        return f"{ENTRY_PREFIX}:{{{version}:{bucket % SLOT_GROUPS}}}:b:{bucket}"
    return f"{ENTRY_PREFIX}:{version}:b:{bucket}"


def is_cluster(client: object) -> bool:
    return isinstance(client, redis.RedisCluster)


def servers(client: redis.Redis) -> list[redis.Redis]:
    """A client per server holding data: the one, or each master of a cluster (CONFIG and INFO
    are per server; a cluster client sends them to one node)."""
    if is_cluster(client):
        return [client.get_redis_connection(node) for node in client.get_primaries()]  # type: ignore[attr-defined]
    return [client]


class RedisEntryStore:
    """``protocols.EntryStore`` on Redis or Valkey; ``buckets`` gives a version's bucket count."""

    def __init__(
        self,
        client: redis.Redis,
        buckets: Callable[[str], int],
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        write_batch_size: int = 1000,
    ) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        self.buckets = buckets
        self.ttl_seconds = ttl_seconds
        self.write_batch_size = write_batch_size
        self._write_if_not_older = client.register_script(_WRITE_IF_NOT_OLDER)
        self._delete_if_not_newer = client.register_script(_DELETE_IF_NOT_NEWER)
        self._read_many = client.register_script(_READ_MANY)
        self._read_headers = client.register_script(_READ_HEADERS)
        self._read_only_scripts = True  # EVALSHA_RO, until a server says it has none
        self._loaded: set[str] = set()  # scripts loaded on every master (cluster)

    def location(self, version: str, doc_id: str) -> tuple[str, str]:
        """``(key, field)`` of a document's entry."""
        return self.bucket_key(version, bucket_of(doc_id, self.buckets(version))), doc_id

    def bucket_key(self, version: str, bucket: int) -> str:
        return bucket_key(version, bucket, self.cluster)

    def _keys(self, version: str, doc_ids: Sequence[str]) -> list[str]:
        n = self.buckets(version)
        return [bucket_key(version, bucket_of(d, n), self.cluster) for d in doc_ids]

    def _bucket_keys(self, version: str) -> Iterator[bytes]:
        pattern = f"{ENTRY_PREFIX}:{{{version}:*}}:b:*" if self.cluster else f"{ENTRY_PREFIX}:{version}:b:*"
        return self.client.scan_iter(match=pattern, count=1000)

    def _calls(self, keys: Sequence[str]) -> list[list[int]]:
        """Indexes of ``keys`` per script call: all of them, or one call per hash slot."""
        if not self.cluster:
            return [list(range(len(keys)))]
        slots: dict[int, list[int]] = defaultdict(list)
        for i, key in enumerate(keys):
            slots[key_slot(key.encode())].append(i)
        return list(slots.values())

    @property
    def _step(self) -> int:
        return CLUSTER_BATCH if self.cluster else min(self.write_batch_size, 500)

    # -- entries ------------------------------------------------------------------------------
    def write_if_not_older(
        self,
        version: str,
        doc_ids: Sequence[str],
        values: Sequence[bytes],
        read_s: Sequence[int | None] | None = None,
    ) -> int:
        """Write entries, except over one computed from a newer state of its document.

        ``read_s``: when each value's document was read (server seconds); an entry written
        before that read is replaced even if its modified_at is later. Returns how many entries
        were written; the rest were superseded by another run.
        """
        reserved = [d for d in doc_ids if d.startswith(TOMBSTONE[0])]
        if reserved:  # the pipeline refuses these first (lib/identity.refusal); never written
            raise ValueError(f"doc_id {reserved[0]!r} starts with the deletion-marker prefix")
        written = 0
        step = self._step
        keys = self._keys(version, doc_ids)
        reads = [r or 0 for r in read_s] if read_s is not None else [0] * len(doc_ids)
        for start in range(0, len(doc_ids), step):
            part = keys[start : start + step]
            calls = []
            for call in self._calls(part):
                args: list = [self.ttl_seconds]
                for i in call:
                    args += [doc_ids[start + i], values[start + i], reads[start + i]]
                calls.append(([part[i] for i in call], args))
            written += self._eval(self._write_if_not_older, calls)
        return written

    @transient
    def _eval(self, script: redis.commands.core.Script, calls: list[tuple[list[str], list]]) -> int:
        """The sum of the script's replies over ``calls`` (keys, args). On a cluster, the calls (one
        slot each) go through a cluster pipeline: one round trip per master, not per call. The
        scripts are conditional, so a retried batch changes nothing already applied."""
        if not self.cluster:
            return sum(int(script(keys=keys, args=args)) for keys, args in calls)
        for attempt in (1, 2):
            if script.sha not in self._loaded:  # a pipelined EVALSHA cannot load it on NOSCRIPT
                for server in servers(self.client):
                    server.script_load(script.script)
                self._loaded.add(script.sha)
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                return sum(int(r) for r in pipe.execute())
            except redis.exceptions.NoScriptError:  # a master restarted and lost its scripts
                self._loaded.discard(script.sha)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def delete_if_not_newer(
        self, version: str, doc_ids: Sequence[str], source_ms: Sequence[int], seen_s: int = 0
    ) -> int:
        """Delete entries of documents seen deleted at ``seen_s`` (server seconds): those computed
        from an earlier read, leaving tombstones. ``seen_s`` 0 (unknown): those whose source
        state is at most the one given (a newer one stays), without tombstones."""
        deleted = 0
        step = self._step
        keys = self._keys(version, doc_ids)
        for start in range(0, len(doc_ids), step):
            part = keys[start : start + step]
            calls = []
            for call in self._calls(part):
                args: list = []
                for i in call:
                    args += [doc_ids[start + i], source_ms[start + i], seen_s]
                calls.append(([part[i] for i in call], args))
            deleted += self._eval(self._delete_if_not_newer, calls)
        return deleted

    def read_headers(self, version: str, doc_ids: Sequence[str]) -> list[codec.RecordHeader | None]:
        """Each entry's header, or None where it is missing, foreign or corrupt (so rewritten)."""
        out: list[codec.RecordHeader | None] = []
        for start in range(0, len(doc_ids), 5000):
            part = doc_ids[start : start + 5000]
            for raw in transient(self._lua_read)(self._read_headers, version, part):
                try:
                    out.append(codec.parse_header(raw) if raw else None)
                except codec.CodecError:
                    out.append(None)
        return out

    @transient
    def server_time(self) -> int:
        """The server's clock, whole seconds: the one clock read and write times are compared on."""
        return int(self.client.time()[0])

    def read_one(self, version: str, doc_id: str) -> bytes | None:
        key, field = self.location(version, doc_id)
        try:  # the lookup path: no retry machinery unless a fault calls for it
            return self.client.hget(key, field)
        except TRANSIENT:
            return transient(self.client.hget)(key, field)

    def read(self, version: str, doc_ids: Sequence[str]) -> list[bytes | None]:
        """Entries in ``doc_ids`` order: one Lua multi-get per slice of 5,000."""
        out: list[bytes | None] = []
        step = 5000
        for start in range(0, len(doc_ids), step):
            part = doc_ids[start : start + step]
            try:  # the lookup path: no retry machinery unless a fault calls for it
                out += self._lua_read(self._read_many, version, part)
            except TRANSIENT:
                out += transient(self._lua_read)(self._read_many, version, part)
        return out

    def _lua_read(
        self, script: object, version: str, doc_ids: Sequence[str], fields: Sequence[str] | None = None
    ) -> list[bytes | None]:
        """One call of a read script (_READ_MANY or _READ_HEADERS) over ``doc_ids`` (their
        ``fields``, default the doc_ids); on a cluster, one pipeline of HGETs (whole records:
        headers are parsed from their front)."""
        if not doc_ids:
            return []
        keys = self._keys(version, doc_ids)
        fields = list(fields or doc_ids)
        if self.cluster:
            pipe = self.client.pipeline(transaction=False)
            for key, field in zip(keys, fields, strict=True):
                pipe.hget(key, field)
            return list(pipe.execute())
        # a missing field is false in Lua, a nil reply here
        return list(self._read_script(script, keys, fields))  # type: ignore[arg-type]

    def _read_script(self, script: redis.commands.core.Script, keys: list[str], args: list) -> list:
        """A read script through EVALSHA_RO: a reader whose ACL grants its keys read-only (``%R~``)
        may run it, where EVALSHA counts as a write. Servers before Redis 7 get EVALSHA."""
        if self._read_only_scripts:
            try:
                try:
                    return self.client.evalsha_ro(script.sha, len(keys), *keys, *args)  # type: ignore[return-value]
                except redis.exceptions.NoScriptError:  # a restarted server: load it once
                    self.client.script_load(script.script)
                    return self.client.evalsha_ro(script.sha, len(keys), *keys, *args)  # type: ignore[return-value]
            except redis.exceptions.ResponseError as err:
                if "unknown command" not in str(err).lower():
                    raise
                self._read_only_scripts = False
        return script(keys=keys, args=args)  # type: ignore[return-value]

    @transient
    def has_entries(self, version: str) -> bool:
        """Whether ``version`` has any bucket (entries or deletion markers)."""
        return next(iter(self._bucket_keys(version)), None) is not None

    def scan_ids(self, version: str, forget_deletions_before: int = 0) -> Iterator[str]:
        """Every doc_id with an entry; tombstones older than ``forget_deletions_before`` (server
        seconds) are removed on the way."""
        return iter(self._scan_ids(version, forget_deletions_before))

    @transient
    def _scan_ids(self, version: str, forget_before: int) -> list[str]:
        keys = list(self._bucket_keys(version))
        ids: list[str] = []
        marker = TOMBSTONE.encode()
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            pipe = self.client.pipeline(transaction=False)
            for key in part:
                pipe.hkeys(key)
            tombs: list[tuple[bytes, bytes]] = []
            for key, fields in zip(part, pipe.execute(), strict=True):
                for f in fields:
                    if f.startswith(marker):
                        tombs.append((key, f))
                    else:
                        ids.append(f.decode())
            if forget_before and tombs:
                self._forget(tombs, forget_before)
        return ids

    def _forget(self, tombs: list[tuple[bytes, bytes]], before: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, field in tombs:
            pipe.hget(key, field)
        seen = pipe.execute()
        old = [(k, f) for (k, f), at in zip(tombs, seen, strict=True) if at and int(at) < before]
        pipe = self.client.pipeline(transaction=False)
        for key, field in old:
            pipe.hdel(key, field)
        pipe.execute()

    def deletions_seen(self, version: str, doc_ids: Sequence[str]) -> list[int | None]:
        """When each document's deletion was seen (server seconds), where a tombstone says so."""
        if not doc_ids:
            return []
        values = transient(self._lua_read)(
            self._read_many, version, doc_ids, [TOMBSTONE + d for d in doc_ids]
        )
        return [int(v) if v else None for v in values]

    @transient
    def entry_ttl(self, version: str, doc_id: str) -> int:
        """Seconds until the entry's bucket expires (-2: no such bucket)."""
        return int(self.client.ttl(self.location(version, doc_id)[0]))

    def drop(self, version: str) -> int:
        """Remove every bucket of a version; returns how many entries they held."""
        removed = 0
        keys = list(self._bucket_keys(version))
        marker = TOMBSTONE.encode()
        for start in range(0, len(keys), 1000):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start : start + 1000]:
                pipe.hkeys(key)
            removed += sum(1 for fields in pipe.execute() for f in fields if not f.startswith(marker))
            self.client.unlink(*keys[start : start + 1000])
        return removed
