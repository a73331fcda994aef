"""What deploys: the PostgreSQL instance config; the code location in a fresh clone."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest


def _postgres() -> dict[str, str] | None:

    if os.environ.get("DAGSTER_PG_HOST"):
        return {k: os.environ[k] for k in os.environ if k.startswith("DAGSTER_PG_")}
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5).close()
    except OSError:
        return None
    return {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": "postgres",
    }


def test_deployment_instance_config_runs_on_postgres(tmp_path, monkeypatch):
    pg = _postgres()
    if pg is None:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 and no DAGSTER_PG_HOST")
    for key, value in pg.items():
        monkeypatch.setenv(key, value)
    shutil.copy(Path(__file__).parents[1] / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

        @dg.asset
        def probe() -> int:
            return 1

        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id) is not None


ROOT = Path(__file__).parents[1]
OURS = ("MONGO_", "REDIS_", "EA_", "DAGSTER_")


def _fresh_env() -> dict[str, str]:
    """The environment of a fresh clone: none of our settings, no DAGSTER_HOME."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OURS)}


def _fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    for name in ("dagster.yaml", "workspace.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name if clone.exists() else _mkdir(clone) / name)
    return clone


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def test_fresh_clone_validates_without_any_environment(tmp_path):
    clone = _fresh_clone(tmp_path)
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "embedding_assets.definitions"],
        cwd=clone,
        env=_fresh_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "postgres" not in (ROOT / "dagster.yaml").read_text()
    assert "postgres" in (ROOT / "deploy" / "dagster.yaml").read_text()


@pytest.mark.slow
def test_fresh_clone_dagster_dev_serves_the_ui(tmp_path):
    clone = _fresh_clone(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dagster = Path(sys.executable).with_name("dagster")
    process = subprocess.Popen(
        [str(dagster), "dev", "-m", "embedding_assets.definitions", "-p", str(port)],
        cwd=clone,
        env=_fresh_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150
        body = ""
        while time.monotonic() < deadline and process.poll() is None:
            try:
                query = b'{"query": "{ assetNodes { assetKey { path } } }"}'
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query,
                    headers={"Content-Type": "application/json"},
                )
                body = urllib.request.urlopen(request, timeout=5).read().decode()
                if "feature_store_entries" in body:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert "feature_store_entries" in body, process.stdout.read1().decode() if process.stdout else ""
        for name in ("document_snapshots", "chunked_text", "document_vectors"):
            assert name in body
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
