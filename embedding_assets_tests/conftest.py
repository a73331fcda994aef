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


def redis_test_db() -> int:
    """EA_TEST_REDIS_DB (9), plus the pytest-xdist worker's number: workers share a REDIS_URL
    when one is given, and each flushes its own database."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(os.environ.get("EA_TEST_REDIS_DB", "9")) + int(worker.removeprefix("gw") or 0)


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture
def redis_url(servers: object) -> str:
    url = _with_db(servers.redis_url, redis_test_db())  # type: ignore[attr-defined]
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
        # tests judge the store at once: no change is "in flight" (test_store_audit tests the grace)
        "EA_AUDIT_GRACE_SECONDS": "0",
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
def static_dir() -> str:
    """The static tier distilled from the default model, once per machine (about 5 minutes on 2
    cores: 250k tokens through multilingual-e5-small), in the machine's model cache."""
    from embedding_assets import settings
    from embedding_assets.embedders.sentence_transformer import default_model_path
    from embedding_assets.embedders.static import ensure_distilled

    cache = settings.model_cache_dir() / "static"
    ensure_distilled(cache, default_model_path(), 256)
    return str(cache)


@pytest.fixture
def postgres_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A DAGSTER_HOME with deploy/dagster.yaml on a database of this test's own, on the machine's
    PostgreSQL (127.0.0.1:5432, or DAGSTER_PG_* from the environment); dropped afterwards."""
    import shutil
    import socket

    import psycopg2

    host = os.environ.get("DAGSTER_PG_HOST", "127.0.0.1")
    port = int(os.environ.get("DAGSTER_PG_PORT", "5432"))
    user = os.environ.get("DAGSTER_PG_USER", "postgres")
    password = os.environ.get("DAGSTER_PG_PASSWORD", "")
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        pytest.skip(f"no PostgreSQL on {host}:{port}")
    name = f"ea_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=host, port=port, user=user, password=password, dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    for key, value in {
        "DAGSTER_PG_HOST": host,
        "DAGSTER_PG_PORT": str(port),
        "DAGSTER_PG_USER": user,
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_PG_DB": name,
    }.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "pg-home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[1] / "deploy" / "dagster.yaml", home / "dagster.yaml")
    yield str(home)
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


# Scenario tests report what the store got wrong at each point they check (dev.harness.
# differences); the figures are printed after the run: `pytest -m servers -k <scenario>`. They
# travel as the test's user properties, which pytest-xdist's workers send to the controller.
_MEASURED = "store_differences"


@pytest.fixture
def measure(request: pytest.FixtureRequest):
    """``measure(coll, store, version, label)``: the store's differences from the collection,
    recorded for the summary; a scenario asserts they are none."""
    from embedding_assets.dev.harness import differences

    def run(coll: object, store: object, version: str, label: str = "") -> object:
        found = differences(coll, store, version)  # type: ignore[arg-type]
        name = f"{request.node.name}{' / ' + label if label else ''}"
        request.node.user_properties.append((_MEASURED, f"{found}  {name}"))
        return found

    return run


def pytest_terminal_summary(terminalreporter: object) -> None:
    lines = [
        value
        for reports in terminalreporter.stats.values()  # type: ignore[attr-defined]
        for report in reports
        if getattr(report, "when", None) == "call"
        for key, value in getattr(report, "user_properties", ())
        if key == _MEASURED
    ]
    if lines:
        terminalreporter.section("store against the collection (lost / stale / extra entries)")  # type: ignore[attr-defined]
        for line in lines:
            terminalreporter.write_line(line)  # type: ignore[attr-defined]
