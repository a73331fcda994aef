"""The Redis feature store as a whole: its entries, its control plane, and the server they share.

The pipeline's steps see ``entries`` through ``protocols.EntryStore`` and the version's control
keys through ``control``; services read through ``embedding_assets.client``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import polars as pl
import redis

from embedding_assets.lib.protocols import EntryStore
from embedding_assets.lib.publish import calibration_sample
from embedding_assets.lib.quantization import INT8, Int8Calibration, calibrate_int8
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.retrying import certificate_refused, transient
from embedding_assets.stores.control_plane import DEFAULT_BUCKETS, ControlPlane
from embedding_assets.stores.redis_entries import DEFAULT_TTL_SECONDS, RedisEntryStore, servers

# Server settings under which a bucket stays a listpack (records up to ~500 B, 2048 per bucket).
LISTPACK_SETTINGS = {"hash-max-listpack-value": 1024, "hash-max-listpack-entries": 2048}


class TooSoon(RuntimeError):
    """A version deactivated too recently to remove: its followers may still read it."""

    def __init__(self, version: str, seconds: int) -> None:
        super().__init__(f"{version} stopped being the active version {seconds} s too recently")
        self.version, self.seconds = version, seconds


class FeatureStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        write_batch_size: int = 1000,
        buckets: int = DEFAULT_BUCKETS,
        entries: EntryStore | None = None,
    ) -> None:
        """``entries``: another sink for the records (default: bucketed hashes on this server)."""
        self.client = client
        self.control = ControlPlane(client, buckets=buckets)
        self.entries: EntryStore = entries or RedisEntryStore(
            client, self.control.buckets, ttl_seconds=ttl_seconds, write_batch_size=write_batch_size
        )

    @classmethod
    def from_url(cls, url: str, **kwargs: int) -> FeatureStore:
        return cls(connect(url, socket_timeout=30), **kwargs)

    def calibration_for(
        self,
        spec: EmbeddingSpec,
        frames: Iterable[pl.DataFrame],
        extra: Callable[[], np.ndarray] | None = None,
    ) -> Int8Calibration | None:
        """The version's int8 calibration; the first publish fixes it from its own vectors
        (``frames`` read lazily, only as far as the sample needs) and the vectors ``extra`` gives
        (asked for only then): a first publish of a few documents (a delta run under new
        settings) would otherwise fix ranges that clip every other document. None for other codecs."""
        if spec.quantization != INT8:
            return None
        stored = self.control.calibration(spec.tag)
        if stored is not None:
            return stored
        more = extra() if extra is not None else None  # first: it may embed, before frames are read
        sample = calibration_sample(frames)
        if more is not None and len(more):
            sample = more if sample is None else np.vstack([sample, more.astype(sample.dtype)])
        if sample is None:
            return None
        return self.control.ensure_calibration(spec.tag, calibrate_int8(sample))

    def drop_version(self, version: str, grace_seconds: int = 0) -> int:
        """Remove every key of a version (entries, then its control keys); refuses the active one,
        and, with ``TooSoon``, one that stopped being active less than ``grace_seconds`` ago:
        clients following the active version may still read it until their next refresh."""
        if version == self.control.active_version():
            raise ValueError(f"{version} is the active version; activate another one first")
        since = self.control.inactive_since(version)
        if since is not None and grace_seconds > 0:
            left = since + grace_seconds - int(self.client.time()[0])
            if left > 0:
                raise TooSoon(version, left)
        removed = self.entries.drop(version)
        self.control.forget(version)
        return removed

    def compact_encoding(self, tune: bool = True) -> str:
        """``listpack`` when buckets of records stay listpacks on this server, else ``hashtable``.

        With ``tune``, raises the server's listpack limits if they are too low for records
        (Redis and Valkey default to 64-byte values). Both encodings read and write the same;
        the hashtable one costs ~35-70 B more per document. Managed servers that refuse CONFIG
        keep their settings.
        """
        return min((_compact(server, tune) for server in servers(self.client)), key=_ENCODINGS.index)

    def incarnation(self) -> str:
        """Which lives of the servers hold the store: each master's run id (new at every restart)
        and its count of evicted keys. When it changes, entries may be gone (a restart without
        persistence, an eviction) though no document changed: only an audit can say which."""
        parts = []
        for server in servers(self.client):
            info = server.info()
            parts.append(f"{info.get('run_id', '?')}:{info.get('evicted_keys', 0)}")
        return ",".join(sorted(parts))

    @transient
    def used_memory(self) -> int:
        """Bytes the server uses; on a cluster, the sum over its masters."""
        return sum(int(server.info("memory")["used_memory"]) for server in servers(self.client))


# worst first: a cluster is as compact as its least compact master
_ENCODINGS = ["unknown", "hashtable", "listpack"]


def _compact(server: redis.Redis, tune: bool) -> str:
    try:
        current = {k: int(v) for k, v in server.config_get("hash-max-listpack-*").items()}
        if tune:
            for name, wanted in LISTPACK_SETTINGS.items():
                if current.get(name, 0) < wanted:
                    server.config_set(name, wanted)
                    current[name] = wanted
    except redis.ResponseError:  # CONFIG disabled or renamed
        return "unknown"
    ok = all(current.get(n, 0) >= wanted for n, wanted in LISTPACK_SETTINGS.items())
    return "listpack" if ok else "hashtable"


class AccessDenied(redis.exceptions.NoPermissionError):
    """A command or key this Redis user's ACL does not allow: one line naming the user and the
    command (Redis 7.0 names neither the user nor, for keys, the command)."""

    @classmethod
    def of(cls, err: redis.exceptions.ResponseError, user: str, command: str | None) -> AccessDenied:
        # a pipeline's error quotes the whole command (values included) before the server's words
        text = str(err).split("caused error: ", 1)[-1]
        named = re.search(r"run the '([^']+)' command", text)
        what = (named.group(1) if named else command or "?").upper().replace("|", " ")
        target = " on one of its keys" if re.search(r"access (a|one of the) key", text) else ""
        return cls(
            f"Redis user '{user}' may not run {what}{target}: its ACL does not allow it "
            f"(deploy/redis/users.acl lists what each user needs; the server said: {text.splitlines()[0]})"
        )


class _Explained:
    """Turns a NOPERM reply into ``AccessDenied``, for single commands and pipelines alike."""

    ea_user = "default"

    def execute_command(self, *args: object, **options: object) -> object:
        try:
            return super().execute_command(*args, **options)  # type: ignore[misc]
        except redis.exceptions.ResponseError as err:
            if not _denied(err):
                raise
            raise AccessDenied.of(err, self.ea_user, str(args[0]) if args else None) from None

    def pipeline(self, *args: object, **kwargs: object) -> object:
        pipe = super().pipeline(*args, **kwargs)  # type: ignore[misc]
        execute, user = pipe.execute, self.ea_user

        def explained(*a: object, **k: object) -> object:
            try:
                return execute(*a, **k)
            except redis.exceptions.ResponseError as err:
                if not _denied(err):
                    raise
                raise AccessDenied.of(err, user, None) from None

        pipe.execute = explained
        return pipe


def _denied(err: redis.exceptions.ResponseError) -> bool:
    """NOPERM, or a script's command refused by the ACL (a plain error reply: "ACL failure in script")."""
    return isinstance(err, redis.exceptions.NoPermissionError) or "ACL failure" in str(err)


class StoreClient(_Explained, redis.Redis):
    pass


class StoreClusterClient(_Explained, redis.RedisCluster):
    pass


def connect(url: str, **kwargs: object) -> redis.Redis:
    """A client of the server at ``url``; a cluster client when it is a node of a Redis Cluster
    (any node's URL will do: the others are discovered). A server that cannot be asked gets the
    plain client, whose first command reports why. A command the user's ACL refuses raises
    ``AccessDenied``; a TLS certificate that does not verify, ``TLSRefused``."""
    # no CLIENT SETINFO on connect: Redis 7.0 has none, and the ACL users are not granted it
    kwargs = {"driver_info": None, **kwargs}
    client = StoreClient.from_url(url, **kwargs)
    client.ea_user = redis_user(url)
    try:
        clustered = int(client.info("cluster").get("cluster_enabled", 0)) == 1
    except redis.ConnectionError as err:
        refused = tls_refusal(err, url)
        if refused is not None:
            raise refused from None
        return client
    except redis.RedisError:
        return client
    if not clustered:
        return client
    client.close()
    kwargs.pop("db", None)
    cluster = StoreClusterClient.from_url(url, **kwargs)
    cluster.ea_user = client.ea_user
    return cluster  # type: ignore[return-value]


def redis_user(url: str) -> str:
    return unquote(urlsplit(url).username or "") or "default"


class TLSRefused(redis.ConnectionError):
    """The server's certificate does not verify against the CA the URL names (or the system's)."""


def tls_refusal(err: BaseException, url: str) -> TLSRefused | None:
    """A clear error when ``err`` is a failed TLS verification, else None."""
    if not certificate_refused(err):
        return None
    text = str(err)
    parts = urlsplit(url)
    ca = dict(parse_qsl(parts.query)).get("ssl_ca_certs", "the system's CAs")
    reason = text.split("certificate verify failed:")[-1].split("(_ssl")[0].strip(" )") or "not trusted"
    return TLSRefused(
        f"TLS: the certificate of Redis at {parts.hostname}:{parts.port} does not verify against "
        f"{ca} ({reason}); refusing to connect"
    )
