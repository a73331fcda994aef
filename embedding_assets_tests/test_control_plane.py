"""The control keys: never guessed by a reader, restored from the version's copy, never replaced
by a different value, and never left to a server policy that evicts them."""

import dagster as dg
import numpy as np
import pytest
import redis

from embedding_assets.client import EmbeddingClient
from embedding_assets.dev.harness import collection, load_sample, materialize, metadata
from embedding_assets.stores.control_plane import ControlPlaneLost, buckets_key, calibration_key
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(
        e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    )


@pytest.fixture
def filled(pipeline_env):
    docs = load_sample(pipeline_env, 30)
    assert materialize().success
    store = FeatureStore.from_url(pipeline_env["REDIS_URL"])
    return store, store.control.active_version(), [d["doc_id"] for d in docs]


def test_lost_control_keys_are_not_guessed_by_readers_and_are_restored_by_the_pipeline(
    pipeline_env, filled, measure
):
    store, version, ids = filled
    raw = store.client
    calibration = raw.get(calibration_key(version))
    before = EmbeddingClient.from_url(pipeline_env["REDIS_URL"]).get_many(ids)
    raw.delete(buckets_key(version), calibration_key(version))  # as an eviction or a partial flush leaves it

    with pytest.raises(ControlPlaneLost, match="bucket layout"):
        EmbeddingClient.from_url(pipeline_env["REDIS_URL"]).get(ids[0])
    assert not raw.exists(buckets_key(version))  # the reader created nothing

    result = materialize()
    entries = metadata(result, "feature_store_entries")
    assert entries["control_keys_restored"] == 2
    assert raw.get(calibration_key(version)) == calibration  # not recomputed from a new sample
    after = EmbeddingClient.from_url(pipeline_env["REDIS_URL"]).get_many(ids)
    for old, new in zip(before, after, strict=True):
        assert np.array_equal(old.vector, new.vector)
    assert measure(collection(pipeline_env), store, version, "control keys restored").none


def test_a_control_key_that_differs_from_the_copy_is_refused(filled):
    store, version, _ = filled
    store.client.set(buckets_key(version), 99)  # readers would look for every entry in the wrong bucket
    result = materialize(raise_on_error=False)
    assert not result.success
    assert "differs from the copy" in _failure(result)
    assert store.client.get(buckets_key(version)) == b"99"  # nothing written over it


def test_an_eviction_policy_that_can_evict_control_keys_is_refused(pipeline_env, filled):
    raw = redis.Redis.from_url(pipeline_env["REDIS_URL"])
    policy = raw.config_get("maxmemory-policy")["maxmemory-policy"]
    raw.config_set("maxmemory-policy", "allkeys-lru")
    try:
        result = materialize(raise_on_error=False)
    finally:
        raw.config_set("maxmemory-policy", policy)
    assert not result.success
    assert "allkeys-lru" in _failure(result) and "noeviction" in _failure(result)
    assert metadata(materialize(), "feature_store_entries")["maxmemory_policy"] == policy
