"""The commands as a person runs them."""

import os
import signal
import subprocess
import sys
import time

import pytest

from embedding_assets.cli import main
from embedding_assets.dev.harness import load_sample, materialize

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def test_demo_command_embeds_the_sample_and_prints_a_summary(pipeline_env, tmp_path):
    env = {**os.environ, **pipeline_env}
    env.pop("EA_PARQUET_DIR")
    env.pop("DAGSTER_HOME", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedding_assets.cli",
            "--state-dir",
            str(tmp_path / "state"),
            "demo",
            "--docs",
            "42",
            "--neighbours",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "loaded 44 documents in 14 languages" in text
    assert "documents embedded     42" in text
    assert "skipped / failed       2" in text
    assert "odd-number-title" in text and "no text" in text
    assert "Redis bytes / document" in text
    assert "3 nearest neighbours" in text
    assert (tmp_path / "state" / "parquet" / "feature_store_entries").exists() is False
    assert (tmp_path / "state" / "parquet" / "document_vectors" / "shard-00.parquet").exists()
    assert (tmp_path / "state" / "dagster_home" / "dagster.yaml").exists()  # runs kept for `dev`


def test_lookup_prints_the_entry_and_neighbours(pipeline_env, capsys):
    docs = load_sample(pipeline_env, 30)
    assert materialize().success
    assert main(["lookup", docs[0]["doc_id"], "--neighbours", "2"]) == 0
    out = capsys.readouterr().out
    assert f"== lookup {docs[0]['doc_id']}" in out
    assert "dim 384" in out and "content_hash" in out
    assert "2 nearest neighbours" in out
    assert main(["lookup", "no-such-doc"]) == 0
    assert "no entry" in capsys.readouterr().out


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_dev_prints_the_ui_starts_quietly_and_stops_every_child(pipeline_env, tmp_path, stop_with):
    """`embedding-assets dev` (embedded servers: no URLs given) says where the UI is, its UI
    answers, its logs carry no warning, and one signal stops it and all it started."""
    import json
    import urllib.request

    import psutil

    from embedding_assets.dev.servers import free_port

    env = {k: v for k, v in {**os.environ, **pipeline_env}.items() if k not in ("MONGO_URI", "REDIS_URL")}
    env.pop("EA_PARQUET_DIR")
    env.pop("DAGSTER_HOME", None)
    port = free_port()
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "embedding_assets.cli", "--state-dir", str(state), "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("UI: "):
                break
        assert lines and lines[-1].startswith(f"UI: http://127.0.0.1:{port}"), lines
        query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
        body, deadline = "", time.monotonic() + 300
        while "feature_store_entries" not in body and time.monotonic() < deadline:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query,
                    headers={"Content-Type": "application/json"},
                )
                body = urllib.request.urlopen(request, timeout=10).read().decode()
            except OSError:
                time.sleep(1)
        assert "feature_store_entries" in body, _logs(state)
        children = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        assert "dagster-webserver" in names and "dagster-daemon" in names
        # one code server that both reach (none of their own, replaced at each reload)
        assert "code-server start" in names and names.count("embedding_assets.definitions") >= 1
        workspace = (state / "dev-workspace.yaml").read_text()
        assert "grpc_server" in workspace, workspace
        process.send_signal(stop_with)
        assert process.wait(90) == 0
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], [" ".join(p.cmdline()) for p in alive]
    finally:
        if process.poll() is None:  # a failed check: nothing it started may outlive the test
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
    for log in ("webserver.log", "daemon.log", "code-server.log"):
        text = (state / "dev-logs" / log).read_text()
        assert "warn" not in text.lower(), text[-3000:]
        assert "No heartbeat" not in text and " - DEBUG - " not in text, text[-3000:]


def _logs(state) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted((state / "dev-logs").glob("*.log")))


@pytest.mark.parametrize(
    "argv, says",
    [
        (["lookup", "doc-1"], "no active version yet; materialize first"),
        (["search", "hello"], "no active version yet; materialize first"),
        (["lookup", "doc-1", "--version", "nope"], "nope"),
        (["versions"], "no versions yet"),
        (["cleanup", "nope"], "unknown version nope"),
    ],
)
def test_commands_on_an_empty_store_say_why_in_a_line(redis_url, monkeypatch, tmp_path, capsys, argv, says):
    """A person gets the reason, not a traceback, and a non-zero exit where nothing was done."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    code = main(["--state-dir", str(tmp_path), *argv])
    out = capsys.readouterr()
    text = out.out + out.err
    assert says in text and "Traceback" not in text
    assert code == (0 if argv == ["versions"] else 2)
