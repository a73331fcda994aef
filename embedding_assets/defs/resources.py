"""Resources, configured from ``settings`` in one place (``build_resources``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import redis
from pydantic import PrivateAttr
from upath import UPath

from embedding_assets import settings
from embedding_assets.defs.alerts import AlertWebhookResource
from embedding_assets.embedders.packaged import resolve as resolve_model
from embedding_assets.embedders.remote import RemoteEmbedder
from embedding_assets.embedders.runtime_choice import transformer_embedder
from embedding_assets.embedders.static import (
    STATIC_BATCH_DOCS,
    STATIC_WINDOW_TOKENS,
    StaticEmbedder,
    StaticModelNotBuilt,
)
from embedding_assets.lib.chunk import ChunkPlan
from embedding_assets.lib.pooling import pooling_decay
from embedding_assets.lib.protocols import Embedder
from embedding_assets.lib.quantization import QUANTIZATIONS
from embedding_assets.lib.text import TEXT_RULES
from embedding_assets.lib.versioning import EmbeddingSpec, model_slug
from embedding_assets.retrying import transient
from embedding_assets.sources.mongo import MongoDocumentSource
from embedding_assets.stores.feature_store import FeatureStore, TLSRefused
from embedding_assets.stores.locks import RedisLocks
from embedding_assets.stores.shard_state import ShardLayoutError, ShardStateStore, is_local

OVERSIZE_POLICIES = ("truncate", "reject")
# documents per embedding batch of the transformer and remote tiers (EA_CHECKPOINT_DOCS=0)
DOCS_PER_BATCH = 512


def _default(name: str) -> Any:
    """A field's default is its setting's default: one place for each."""
    return settings.SETTINGS[name].default


class DocumentSourceResource(dg.ConfigurableResource):
    """The MongoDB collection of documents to embed."""

    uri: str
    database: str = _default("MONGO_DB")
    collection: str = _default("MONGO_COLLECTION")
    read_batch_size: int = _default("EA_READ_BATCH")
    timeout_ms: int = _default("EA_MONGO_TIMEOUT_MS")  # server selection; then in-step retries

    _source: MongoDocumentSource | None = PrivateAttr(default=None)

    def source(self) -> MongoDocumentSource:
        if not self.uri:
            raise dg.Failure(
                "MONGO_URI is not set: export it, or run `embedding-assets dev`, which starts "
                "embedded servers and sets it"
            )
        if self._source is None:
            self._source = MongoDocumentSource(
                self.uri,
                self.database,
                self.collection,
                batch_size=self.read_batch_size,
                timeout_ms=self.timeout_ms,
            )
        return self._source

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._source is not None:
            self._source.close()


class FeatureStoreResource(dg.ConfigurableResource):
    """The Redis (or Valkey) server holding the embeddings."""

    url: str
    ttl_seconds: int = _default("EA_TTL_SECONDS")
    write_batch_size: int = 1000
    # New versions spread their entries over this many hashes: about documents / 64.
    buckets: int = _default("EA_STORE_BUCKETS")
    # 1: raise the server's listpack limits so buckets stay compact (needs CONFIG; see deploy/).
    tune_server: int = _default("EA_REDIS_TUNE")
    # Entries older than this are restamped (and their TTL renewed) by any full run. Below
    # 24h so that a daily sweep keeps every entry younger than the 24h promise.
    max_age_seconds: int = _default("EA_MAX_AGE_SECONDS")

    _store: FeatureStore | None = PrivateAttr(default=None)

    def store(self, *, wait: bool = True) -> FeatureStore:
        """The store, once Redis answers. ``wait=False`` asks once (a sensor has 60 s per tick
        and must not spend them waiting for a server that is down)."""
        if not self.url:
            raise dg.Failure(
                "REDIS_URL is not set: export it, or run `embedding-assets dev`, which starts "
                "embedded servers and sets it"
            )
        if self._store is None:
            try:
                store = FeatureStore.from_url(
                    self.url,
                    ttl_seconds=self.ttl_seconds,
                    write_batch_size=self.write_batch_size,
                    buckets=self.buckets,
                )
            except TLSRefused as err:  # no retry makes a certificate trusted
                raise dg.Failure(str(err), allow_retries=False) from None
            try:
                (transient(store.client.ping) if wait else store.client.ping)()
            except redis.exceptions.AuthenticationError as err:
                raise dg.Failure(
                    f"Redis at {settings.mask_url(self.url)} refused the credentials ({err}); "
                    "check the user and password in REDIS_URL",
                    allow_retries=False,
                ) from err
            self._store = store
        return self._store

    def encoding(self) -> str:
        """How the server stores buckets (``listpack`` is the compact one), tuning it if allowed.
        With EA_REDIS_TUNE=0 CONFIG is never sent (a least-privilege user may not run it: the
        server's own config sets the limits), and the encoding is reported ``unknown``."""
        if not self.tune_server:
            return "unknown"
        return self.store().compact_encoding(tune=True)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.client.close()


class ShardStateResource(dg.ConfigurableResource):
    """The intermediate assets' shard files (local path or fsspec URL): their only reader and writer."""

    base_dir: str
    num_shards: int = _default("EA_NUM_SHARDS")
    # state on an object store that several machines write: their shard locks live here
    lock_url: str = ""

    _store: ShardStateStore | None = PrivateAttr(default=None)

    def store(self) -> ShardStateStore:
        if self._store is None:
            locks = None
            if not is_local(UPath(self.base_dir)):
                if not self.lock_url:
                    raise dg.Failure(
                        f"shard state at {self.base_dir} is shared storage: its writers need common "
                        "locks, and REDIS_URL is not set",
                        allow_retries=False,
                    )
                locks = RedisLocks(self.lock_url, namespace=self.base_dir)
            try:
                self._store = ShardStateStore(self.base_dir, self.num_shards, locks)
            except ShardLayoutError as err:
                raise dg.Failure(str(err), allow_retries=False) from err
        return self._store


class EmbeddingModelResource(dg.ConfigurableResource):
    """Model and every setting that shapes the vectors; together they make the version tag."""

    model: str = _default("EA_MODEL")  # empty: multilingual-e5-small (embedders/packaged.py)
    backend: str = _default("EA_BACKEND")  # or "static" (distilled), or "remote" (a service)
    embed_urls: str = _default("EA_EMBED_URLS")  # remote: comma-separated endpoints
    embed_model: str = _default("EA_EMBED_MODEL")  # remote: the name the service serves it under
    embed_api_key: str = _default("EA_EMBED_API_KEY")
    embed_concurrency: int = _default("EA_EMBED_CONCURRENCY")
    embed_batch_tokens: int = _default("EA_EMBED_BATCH_TOKENS")
    static_dir: str = _default("EA_STATIC_DIR")  # distilled static models (empty: the model cache)
    device: str = _default("EA_DEVICE")
    batch_size: int = _default("EA_BATCH_SIZE")
    runtime: str = _default("EA_RUNTIME")  # auto: the fastest verified runtime here
    precision: str = _default("EA_PRECISION")  # auto: the fastest lossless precision
    threads: int = _default("EA_THREADS")  # openvino/onnx threads (0: the cores)
    window_tokens: int = _default("EA_WINDOW_TOKENS")  # 0: the model's maximum sequence length
    overlap_tokens: int = _default("EA_OVERLAP_TOKENS")
    pooling: str = _default("EA_POOLING")  # how chunk vectors become the document's
    title_repeat: int = _default("EA_TITLE_REPEAT")
    max_chars: int = _default("EA_MAX_CHARS")
    oversize: str = _default("EA_OVERSIZE")  # text over max_chars: "truncate" (noted) or "reject"
    checkpoint_docs: int = _default("EA_CHECKPOINT_DOCS")  # documents per embedding batch (0: the tier's)
    # finished batches are checkpointed this often: a killed run redoes the batch in flight and
    # at most this much finished work
    checkpoint_seconds: float = _default("EA_CHECKPOINT_SECONDS")
    quantization: str = _default("EA_QUANTIZATION")
    retry_seconds: float = _default("EA_RETRY_SECONDS")  # the embedder's transient errors

    # whether minutes of model building (static distillation) may happen here: not in runs
    # (`embedding-assets model`, demo and dev build before any run starts)
    build_models: bool = False
    _embedder: Embedder | None = PrivateAttr(default=None)
    _spec: EmbeddingSpec | None = PrivateAttr(default=None)

    def embedder(self) -> Embedder:
        if self._embedder is None:
            if self.quantization not in QUANTIZATIONS:
                raise ValueError(f"EA_QUANTIZATION must be one of {QUANTIZATIONS}, got {self.quantization!r}")
            if self.oversize not in OVERSIZE_POLICIES:
                raise ValueError(f"EA_OVERSIZE must be one of {OVERSIZE_POLICIES}, got {self.oversize!r}")
            if self.backend == "static":
                cache = Path(self.static_dir) if self.static_dir else settings.static_dir()
                self._embedder = StaticEmbedder(
                    self.model or None,
                    cache_dir=cache,
                    pooling=self.pooling,
                    window=self.window_tokens if self.window_tokens > 0 else STATIC_WINDOW_TOKENS,
                    build=self.build_models,
                )
            elif self.backend == "remote":
                self._embedder = RemoteEmbedder(
                    resolve_model(self.model),
                    [u.strip() for u in self.embed_urls.split(",") if u.strip()],
                    served_model=self.embed_model,
                    api_key=self.embed_api_key,
                    concurrency=self.embed_concurrency,
                    max_batch_tokens=self.embed_batch_tokens,
                    retry_seconds=self.retry_seconds,
                )
            elif self.backend == "transformer":
                self._embedder = transformer_embedder(
                    self.model or None,
                    device=self.device,
                    batch_size=self.batch_size,
                    runtime=self.runtime,
                    precision=self.precision,
                    threads=self.threads,
                )
            else:
                raise ValueError(
                    f"EA_BACKEND must be 'transformer', 'static' or 'remote', got {self.backend!r}"
                )
        return self._embedder

    def docs_per_batch(self) -> int:
        """Documents per embedding batch: ``EA_CHECKPOINT_DOCS``, or where it is 0 the tier's own.
        A transformer's batch is tens of seconds of work, what a killed run redoes: 512. A static
        one is a tenth of a second: one call of its tokenizer, as the bare encode makes it."""
        if self.checkpoint_docs > 0:
            return self.checkpoint_docs
        return STATIC_BATCH_DOCS if self.backend == "static" else DOCS_PER_BATCH

    def preload_in_background(self, after_seconds: float = 0.0) -> None:
        """Load the static model's tokenizer and table in a daemon thread, ``after_seconds``
        from now: half a second of a 100k run's embedding step, moved into the wait of the run's
        source scan. The tokenizer's load holds the interpreter for about a second: it must start
        once the scan has been asked for, or the request waits on it. The other backends load
        nothing unasked (torch and its weights cost memory a run may not need). Errors are left
        to the embedding step, which loads again and says why."""
        if self.backend != "static":
            return

        def preload() -> None:
            time.sleep(after_seconds)
            try:
                embedder = self.embedder()
                if isinstance(embedder, StaticEmbedder):
                    embedder.preload()
            except Exception:  # the embedding step loads again and says why
                pass

        threading.Thread(target=preload, name="ea-model-preload", daemon=True).start()

    def release_pages(self) -> bool:
        """After a run's last encode: the static table's mapped pages leave the process's
        resident memory, before the publish and the audit's sample process add theirs (a 100k
        run's peak). The other backends keep their weights: nothing is mapped to drop."""
        embedder = self._embedder
        return isinstance(embedder, StaticEmbedder) and embedder.release_pages()

    def spec(self) -> EmbeddingSpec:
        """The version this configuration writes: from the model's files, never its weights."""
        try:
            return self._make_spec()
        except StaticModelNotBuilt as err:  # retrying cannot build it: say what does, once
            raise dg.Failure(str(err), allow_retries=False) from err

    def _make_spec(self) -> EmbeddingSpec:
        if self._spec is None:
            embedder = self.embedder()
            limit = embedder.max_tokens
            window = min(self.window_tokens, limit) if self.window_tokens > 0 else limit
            pooling_decay(self.pooling)  # a clear error before anything is embedded
            self._spec = EmbeddingSpec(
                model=model_slug(embedder.model_name),
                model_fingerprint=embedder.fingerprint,
                dimension=embedder.dimension,
                window_tokens=window,
                overlap_tokens=min(self.overlap_tokens, window - 1),
                title_repeat=self.title_repeat,
                max_chars=self.max_chars,
                text_rules=TEXT_RULES,
                precision=embedder.precision,
                quantization=self.quantization,
                oversize=self.oversize,
                query_prompt=embedder.query_prompt,
                document_prompt=embedder.document_prompt,
                pooling=self.pooling,
            )
        return self._spec

    def chunk_plan(self) -> ChunkPlan:
        return ChunkPlan(self.spec(), single_chunk=not self.embedder().needs_chunking)


def _env(name: str) -> Any:
    """``EnvVar(name)`` when the variable is set (shown as such in the UI), else its default."""
    default = settings.SETTINGS[name].default
    if not settings.is_set(name):
        return default
    if isinstance(default, int) and not isinstance(default, bool):
        return dg.EnvVar.int(name)
    if isinstance(default, float):  # Dagster's EnvVar has no float form: the value itself
        return settings.get(name)
    return dg.EnvVar(name)


def build_resources() -> dict[str, Any]:
    """Every setting of the deployment, as resources; values come from ``settings`` only."""
    return {
        "source": DocumentSourceResource(
            uri=_env("MONGO_URI"),
            database=_env("MONGO_DB"),
            collection=_env("MONGO_COLLECTION"),
            read_batch_size=_env("EA_READ_BATCH"),
            timeout_ms=_env("EA_MONGO_TIMEOUT_MS"),
        ),
        "feature_store": FeatureStoreResource(
            url=_env("REDIS_URL"),
            ttl_seconds=_env("EA_TTL_SECONDS"),
            buckets=_env("EA_STORE_BUCKETS"),
            tune_server=_env("EA_REDIS_TUNE"),
            max_age_seconds=_env("EA_MAX_AGE_SECONDS"),
        ),
        "embedding_model": EmbeddingModelResource(
            model=_env("EA_MODEL"),
            backend=_env("EA_BACKEND"),
            embed_urls=_env("EA_EMBED_URLS"),
            embed_model=_env("EA_EMBED_MODEL"),
            embed_api_key=_env("EA_EMBED_API_KEY"),
            embed_concurrency=_env("EA_EMBED_CONCURRENCY"),
            embed_batch_tokens=_env("EA_EMBED_BATCH_TOKENS"),
            static_dir=_env("EA_STATIC_DIR"),
            device=_env("EA_DEVICE"),
            batch_size=_env("EA_BATCH_SIZE"),
            runtime=_env("EA_RUNTIME"),
            precision=_env("EA_PRECISION"),
            threads=_env("EA_THREADS"),
            window_tokens=_env("EA_WINDOW_TOKENS"),
            overlap_tokens=_env("EA_OVERLAP_TOKENS"),
            pooling=_env("EA_POOLING"),
            title_repeat=_env("EA_TITLE_REPEAT"),
            max_chars=_env("EA_MAX_CHARS"),
            oversize=_env("EA_OVERSIZE"),
            checkpoint_docs=_env("EA_CHECKPOINT_DOCS"),
            checkpoint_seconds=_env("EA_CHECKPOINT_SECONDS"),
            quantization=_env("EA_QUANTIZATION"),
            retry_seconds=_env("EA_RETRY_SECONDS"),
        ),
        "shard_state": ShardStateResource(
            base_dir=settings.parquet_dir(), num_shards=settings.num_shards(), lock_url=_env("REDIS_URL")
        ),
        "alerts": AlertWebhookResource(url=_env("EA_ALERT_WEBHOOK")),
    }
