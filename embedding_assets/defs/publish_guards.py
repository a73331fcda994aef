"""What a version's publish checks and records before it writes: the model is the version's
(remote endpoints against its canary texts), the server will not evict control keys, and the
version's score on the shipped labeled set."""

import json
import time
from collections.abc import Callable

import dagster as dg
import numpy as np

from embedding_assets.defs.resources import EmbeddingModelResource
from embedding_assets.embedders.remote import ModelMismatch
from embedding_assets.lib import quality
from embedding_assets.lib.protocols import Embedder
from embedding_assets.lib.quantization import INT8, Int8Calibration
from embedding_assets.lib.versioning import EmbeddingSpec
from embedding_assets.stores.control_plane import ControlPlane, decode_canary, encode_canary
from embedding_assets.stores.feature_store import FeatureStore
from embedding_assets.stores.shard_state import ShardStateStore


def record_quality(
    context: dg.AssetExecutionContext,
    model: EmbeddingModelResource,
    store: FeatureStore,
    spec: EmbeddingSpec,
    calibration: Int8Calibration | None,
) -> dict | None:
    """The version's score on the shipped labeled set, recorded once, by its first publish: the
    labeled passages and queries embedded by this run's model, scored as clients decode them."""
    recorded = store.control.quality(spec.tag)
    if recorded is not None or (spec.quantization == INT8 and calibration is None):
        return recorded
    labeled = quality.labeled_set()
    passages, queries = labeled_vectors(model.embedder(), labeled)
    decoded = quality.score(quality.as_stored(passages, spec, calibration), queries, labeled)
    exact = quality.score(passages, queries, labeled)
    record = {
        **decoded.as_dict(),
        "float32_score": exact.score,
        "labeled_set": labeled.digest,
        "queries": len(queries) + len(labeled.subjects) * (len(labeled.languages) - 1),  # + English
        "recorded_at": int(time.time()),
    }
    store.control.set_quality(spec.tag, record, np.concatenate([passages, queries]))
    context.log.info(
        f"version {spec.tag} scores {record['score']} on the labeled set (float32 {exact.score})"
    )
    return record


LABELED_VECTORS: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}


def labeled_vectors(embedder: Embedder, labeled: quality.LabeledSet) -> tuple[np.ndarray, np.ndarray]:
    """The labeled set's passage and query vectors, once per process and model: a process that
    publishes several versions or stores (the harness, a test session) embeds them once."""
    key = (
        type(embedder).__name__,
        embedder.model_name,
        embedder.fingerprint,
        str(getattr(embedder, "precision", "")),
        labeled.digest,
    )
    if key not in LABELED_VECTORS:
        LABELED_VECTORS[key] = (
            embedder.encode(labeled.passage_texts()),
            embedder.encode_queries(labeled.query_texts()),
        )
    return LABELED_VECTORS[key]


def verify_model(
    context: dg.AssetExecutionContext,
    embedder: object,
    control: ControlPlane,
    state: ShardStateStore,
    spec: EmbeddingSpec,
) -> None:
    """A remote model's endpoints embed the canary texts as the version's first run did (its
    vectors kept in Redis and beside the shard state), or nothing of this run is written."""
    verify = getattr(embedder, "verify", None)
    if verify is None:  # a local model: its files' fingerprint is in the version tag
        return
    kept = state.load_canary(spec.tag)
    reference = control.canary(spec.tag)
    if reference is None and kept is not None:
        reference = decode_canary(kept)
    try:
        vectors = verify(reference)
        stored = control.ensure_canary(spec.tag, vectors)
        if reference is None:  # another first run may have stored its own meanwhile
            verify(stored)
    except ModelMismatch as err:
        raise dg.Failure(str(err), allow_retries=False) from err
    if kept is None:
        state.save_canary(spec.tag, encode_canary(stored))
    context.log.info(f"model identity verified on {len(vectors)} canary texts")


def calibrate_model(
    context: dg.AssetExecutionContext,
    embedder: object,
    control: ControlPlane,
    state: ShardStateStore,
    spec: EmbeddingSpec,
    windows: Callable[[], list[str]],
) -> None:
    """A statically quantized model (openvino-int8) measures its activation ranges on the
    deployment's own windows: the version's first run takes a sample and records it (in Redis and
    beside the shard state); every later run, on any machine, and every client use that sample, so
    they build the same model."""
    if not getattr(embedder, "needs_calibration", False):
        return
    kept = state.load_blob(spec.tag, "model-calibration")
    recorded = control.model_calibration(spec.tag)
    if recorded is None:
        sample = json.loads(kept) if kept else windows()
        if not sample:
            raise dg.Failure(f"{spec.tag} is calibrated on the deployment's windows, and there are none yet")
        recorded = control.ensure_model_calibration(spec.tag, sample)
    if kept is None:
        state.save_blob(spec.tag, "model-calibration", json.dumps(recorded).encode())
    embedder.calibration = recorded  # type: ignore[attr-defined]
    context.log.info(f"{spec.precision} calibrated on {len(recorded)} windows of this deployment's documents")


# Policies that may evict keys without a TTL: the control keys. volatile-* evict only keys with a
# TTL (entry buckets: the audit finds and the sweep refills them); noeviction refuses writes.
UNSAFE_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


def eviction_policy(context: dg.AssetExecutionContext, store: FeatureStore) -> str | None:
    policy = store.control.eviction_policy()
    if policy in UNSAFE_POLICIES:
        raise dg.Failure(
            f"the feature store's maxmemory-policy is {policy}: under memory pressure it evicts the "
            "control keys (bucket layout, calibration) and entries alike. Set noeviction (writes fail "
            "loudly when full) or a volatile-* policy (only entry buckets, which carry a TTL, can go); "
            "see deploy/README.md",
            allow_retries=False,
        )
    if policy and policy.startswith("volatile-"):
        context.log.warning(f"maxmemory-policy {policy}: entries may be evicted under memory pressure")
    return policy
