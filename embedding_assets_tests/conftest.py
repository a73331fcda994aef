"""Fixtures: real servers (embedded unless MONGO_URI / REDIS_URL are set) and the real model.

Each test gets its own MongoDB database and an empty Redis database (EA_TEST_REDIS_DB,
default 9, is flushed: do not point REDIS_URL at a database you need).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest
import redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from embedding_assets.dev.servers import EmbeddedServers

    with EmbeddedServers(tmp_path_factory.mktemp("servers")) as running:
        yield running


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture
def redis_url(servers: object) -> str:
    url = _with_db(servers.redis_url, int(os.environ.get("EA_TEST_REDIS_DB", "9")))  # type: ignore[attr-defined]
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
def mongo_db(servers: object) -> Iterator[tuple[str, str]]:
    """``(uri, database)`` of a database of this test's own, dropped afterwards."""
    uri = servers.mongo_uri  # type: ignore[attr-defined]
    name = f"ea_test_{uuid.uuid4().hex[:10]}"
    yield uri, name
    client = pymongo.MongoClient(uri)
    client.drop_database(name)
    client.close()


@pytest.fixture
def pipeline_env(
    monkeypatch: pytest.MonkeyPatch, mongo_db: tuple[str, str], redis_url: str, tmp_path: Path
) -> dict[str, str]:
    """Environment the definitions read, pointing at this test's databases."""
    uri, database = mongo_db
    env = {
        "MONGO_URI": uri,
        "MONGO_DB": database,
        "MONGO_COLLECTION": "documents",
        "REDIS_URL": redis_url,
        "EA_PARQUET_DIR": str(tmp_path / "parquet"),
        "EA_DEVICE": "cpu",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def embedder() -> object:
    from embedding_assets.embedders.sentence_transformer import SentenceTransformerEmbedder

    e = SentenceTransformerEmbedder(device="cpu")
    e.model  # noqa: B018 - load once for the session
    return e


@pytest.fixture(scope="session")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One distillation of the static tier per test session (about 20 s)."""
    from embedding_assets.embedders.sentence_transformer import default_model_path
    from embedding_assets.embedders.static import ensure_distilled

    cache = tmp_path_factory.mktemp("static-models")
    ensure_distilled(cache, default_model_path(), 256)
    return str(cache)


# Scenario tests report what the store got wrong at each point they check (dev.harness.
# differences); the figures are printed after the run: `pytest -m servers -k <scenario>`.
_MEASURED: list[tuple[str, object]] = []


@pytest.fixture
def measure(request: pytest.FixtureRequest):
    """``measure(coll, store, version, label)``: the store's differences from the collection,
    recorded for the summary; a scenario asserts they are none."""
    from embedding_assets.dev.harness import differences

    def run(coll: object, store: object, version: str, label: str = "") -> object:
        found = differences(coll, store, version)  # type: ignore[arg-type]
        _MEASURED.append((f"{request.node.name}{' / ' + label if label else ''}", found))
        return found

    return run


def pytest_terminal_summary(terminalreporter: object) -> None:
    if _MEASURED:
        terminalreporter.section("store against the collection (lost / stale / extra entries)")  # type: ignore[attr-defined]
        for name, found in _MEASURED:
            terminalreporter.write_line(f"{found}  {name}")  # type: ignore[attr-defined]
