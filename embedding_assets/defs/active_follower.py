"""The active version kept current while the deployment builds the next one (an upgrade in one
deployment).

A deployment writes the version its settings make (the target). When that is not the version
readers use (a setting in the tag changed and the new version is being backfilled), each delta
run also applies its changes to the active version: the changed documents are chunked, embedded
and written as the active version's own settings and model make them, and deleted ones are
removed from it. Readers never see an edit stale or a deleted document served while the next
version is built, however long that takes; ``embedding-assets activate`` then switches.

The active version's model is rebuilt from its registered spec and the source its runs recorded
(``query_model``), and used only if that configuration makes exactly the active tag: nothing
else is ever written under it. Where it cannot be rebuilt (its model folder is gone, a remote
service serves another model), the run says why and the two-deployment upgrade remains
(docs/operations.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from embedding_assets.defs.resources import EmbeddingModelResource
from embedding_assets.embedders.for_version import backend_of
from embedding_assets.lib import publish
from embedding_assets.lib.chunk import chunk_frame
from embedding_assets.lib.embed import vector_frame
from embedding_assets.lib.runtimes import parse_label
from embedding_assets.lib.vectors import split_invalid
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.stores.dead_letters import FAILED
from embedding_assets.stores.feature_store import FeatureStore
from embedding_assets.stores.shard_state import ShardStateStore

# Rebuilt models, one per active version and process: a run, and a harness or test session
# running many, loads the active version's model once.
_RESOURCES: dict[str, EmbeddingModelResource] = {}


@dataclass
class Followed:
    """What a delta run did to the active version besides its own."""

    version: str
    written: int = 0
    removed: int = 0
    failed: int = 0
    refused: str = ""  # why the active version could not be followed, if it could not

    def metadata(self) -> dict[str, object]:
        return {
            "active_version_followed": not self.refused,
            "active_written": self.written,
            "active_removed": self.removed,
            "active_failures": self.failed,
        }


# What the version tag holds comes from the active version's spec; the rest (where and how fast
# it runs) from this deployment's settings.
FROM_SPEC = (
    "window_tokens", "overlap_tokens", "pooling", "title_repeat", "max_chars", "oversize", "quantization",
)  # fmt: skip
FROM_DEPLOYMENT = (
    "embed_urls", "embed_api_key", "embed_concurrency", "embed_batch_tokens", "static_dir", "device",
    "batch_size", "checkpoint_docs", "checkpoint_seconds", "retry_seconds", "threads", "build_models",
)  # fmt: skip


def active_model(
    target: EmbeddingModelResource, spec: EmbeddingSpec, source: dict | None
) -> EmbeddingModelResource:
    """The configuration that makes ``spec``: its own settings, its recorded model, and this
    deployment's settings for what the tag does not hold (device, batch size, service)."""
    backend = backend_of(spec)
    source = source or {}
    runtime, precision = target.runtime, target.precision
    if backend == "transformer":  # the label names both: openvino-bf16, or torch's bare fp32
        choice = parse_label(spec.precision)
        runtime, precision = choice.runtime, choice.precision
    return EmbeddingModelResource(
        model=source.get("model", "") if backend != "static" else target.model,
        backend=backend,
        embed_model=source.get("served_model") or target.embed_model,
        runtime=runtime,
        precision=precision,
        **{name: getattr(spec, name) for name in FROM_SPEC},
        **{name: getattr(target, name) for name in FROM_DEPLOYMENT},
    )


def _model_for(
    store: FeatureStore, target: EmbeddingModelResource, active: str
) -> EmbeddingModelResource | str:
    """The active version's configuration, or why there is none."""
    if active in _RESOURCES:
        return _RESOURCES[active]
    spec = store.control.versions().get(active)
    if spec is None:
        return "its registration is gone from the store"
    model = active_model(target, spec, store.control.query_model(active))
    try:
        made = model.spec().tag
    except Exception as err:  # a model folder gone, an unreadable config: say so, write nothing
        return f"its model cannot be loaded here ({type(err).__name__}: {err})"
    if made != active:
        return f"its settings and recorded model make version {made} here, not {active}"
    _RESOURCES[active] = model
    return model


def follow_active_version(
    store: FeatureStore,
    state: ShardStateStore,
    target: EmbeddingModelResource,
    keys: list[str],
    doc_ids: list[str],
    *,
    now: int,
    read_time: int,
    max_age_seconds: int,
) -> Followed | None:
    """Applies a delta run's changes (``doc_ids``, in the shards ``keys``) to the active version
    where it is not the version this run writes; None where there is nothing to follow."""
    active = store.control.active_version()
    if active is None or active == target.spec().tag or not doc_ids:
        return None
    model = _model_for(store, target, active)
    if isinstance(model, str):
        return Followed(active, refused=model)
    spec = model.spec()
    wanted = set(doc_ids)
    frames = [state.load("document_snapshots", key) for key in keys]
    rows = pl.concat(
        [f.filter(pl.col("doc_id").is_in(wanted)) for f in frames if f is not None], how="diagonal"
    )
    followed = Followed(active)
    letters = store.control.dead_letters(active)
    if rows.height:
        plan = model.chunk_plan()
        tokenizer = None if plan.single_chunk else model.embedder().tokenizer
        chunked, _ = chunk_frame(rows, tokenizer, plan)
        embedder = model.embedder()
        if getattr(embedder, "needs_calibration", False):  # static int8: the version's own sample
            embedder.calibration = store.control.model_calibration(active)  # type: ignore[attr-defined]
        result = vector_frame(chunked, embedder, retry_seconds=model.retry_seconds, pooling=spec.pooling)
        valid, bad = split_invalid(result.frame)
        failures = result.failures + [
            (d, "invalid vector: non-finite, zero or constant") for d in bad["doc_id"]
        ]
        stats = publish.publish(
            store.entries,
            spec,
            publish.with_read_times(valid, rows.select("doc_id", "modified_at", "read_at")),
            store.control.calibration(active),
            now=now,
            max_age_seconds=max_age_seconds,
        )
        letters.record([(d, FAILED, reason) for d, reason in failures])
        letters.clear([d for d in valid["doc_id"].to_list() if d not in dict(failures)], kinds=[FAILED])
        followed.written, followed.failed = stats.written, len(failures)
    gone = sorted(wanted - set(rows["doc_id"].to_list()))
    followed.removed = publish.remove_entries(store.entries, active, gone, read_time)
    letters.clear(gone)
    return followed
