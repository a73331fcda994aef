"""Transient faults are retried; configuration faults (wrong credentials) fail at once."""

import time

import dagster as dg
import pytest
import redis

from embedding_assets.defs.resources import FeatureStoreResource
from embedding_assets.dev.servers import ValkeyProcess
from embedding_assets.retrying import is_transient
from embedding_assets.stores.feature_store import FeatureStore

pytestmark = pytest.mark.servers


def test_classification():
    assert is_transient(redis.exceptions.ConnectionError("reset"))
    assert is_transient(redis.exceptions.BusyLoadingError("loading"))
    assert not is_transient(redis.exceptions.AuthenticationError("wrong password"))
    assert not is_transient(ValueError("not a fault of the server"))


@pytest.fixture
def guarded_valkey(tmp_path):
    server = ValkeyProcess(tmp_path / "valkey")
    server.start()
    redis.Redis.from_url(server.url).config_set("requirepass", "right-one")
    yield server.url.replace("redis://", "redis://:{}@")
    server.stop()


def test_a_wrong_password_fails_at_once_and_says_so_without_the_password(guarded_valkey):
    wrong = guarded_valkey.format("wrong-one")
    started = time.monotonic()
    with pytest.raises(redis.exceptions.AuthenticationError):
        FeatureStore.from_url(wrong).control.versions()  # retried as transient, this took minutes
    assert time.monotonic() - started < 5

    with (
        pytest.raises(dg.Failure) as failure,
        dg.build_resources({"fs": FeatureStoreResource(url=wrong)}) as resources,
    ):
        resources.fs.store()
    assert "refused the credentials" in str(failure.value) and "wrong-one" not in str(failure.value)
    assert "***" in str(failure.value)

    right = FeatureStore.from_url(guarded_valkey.format("right-one"))
    assert right.control.versions() == {}
