"""One embedded server per data folder: a command run beside `dev` uses dev's servers, never a
second server on the same files; a server whose holder died is replaced, not joined by another."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from embedding_assets.dev.servers import EmbeddedServers, FolderLease

pytestmark = pytest.mark.servers

HOLDER = """
import sys, time
from pathlib import Path
from embedding_assets.dev.servers import EmbeddedServers
with EmbeddedServers(Path(sys.argv[1]), {"MONGO_URI": "unused", "REDIS_URL": ""}) as servers:
    print(servers.redis_url, flush=True)
    time.sleep(300)
"""


def _servers_on(folder: Path) -> list[psutil.Process]:
    """valkey-server processes whose files are in ``folder``."""
    found = []
    for process in psutil.process_iter(["name", "cwd"]):
        if "valkey" in (process.info["name"] or "") and process.info["cwd"] == str(folder.resolve()):
            found.append(process)
    return found


def _starts(folder: Path) -> int:
    """How many times a server started on ``folder`` (its log's 'Ready to accept')."""
    log = folder / "valkey.log"
    return log.read_text(errors="replace").count("Ready to accept") if log.exists() else 0


@pytest.fixture
def holder(tmp_path):
    """A process holding the embedded valkey of ``tmp_path`` (as `embedding-assets dev` does)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    url = process.stdout.readline().strip()
    assert url.startswith("redis://"), url
    yield process, url
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # under xdist in CI it outlives SIGTERM; never leave it behind
            process.kill()
            process.wait(30)
    for leftover in _servers_on(tmp_path / "valkey"):
        leftover.kill()


def test_a_second_process_uses_the_server_the_first_holds(tmp_path, holder):
    _, url = holder
    folder = tmp_path / "valkey"
    with EmbeddedServers(tmp_path, {"MONGO_URI": "unused", "REDIS_URL": ""}) as servers:
        assert servers.redis_url == url
        assert servers.reused == ["valkey"] and servers.started == []
        redis.Redis.from_url(servers.redis_url).set("written-beside", "1")
    # leaving did not stop the holder's server, and the write is in it
    assert redis.Redis.from_url(url).get("written-beside") == b"1"
    assert len(_servers_on(folder)) == 1 and _starts(folder) == 1


def test_cli_commands_beside_dev_start_no_server_of_their_own(tmp_path, holder):
    _, url = holder
    folder = tmp_path / "valkey"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MONGO_URI")}
    for command in (["versions"], ["dead-letters"], ["lookup", "doc-1"]):
        done = subprocess.run(
            [sys.executable, "-m", "embedding_assets.cli", "--state-dir", str(tmp_path), *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in done.stderr, done.stderr
    assert _starts(folder) == 1, "a command started a second server on dev's folder"
    assert len(_servers_on(folder)) == 1
    assert redis.Redis.from_url(url).ping()


def test_a_server_left_by_a_killed_holder_is_replaced_and_its_data_kept(tmp_path, holder):
    process, url = holder
    redis.Redis.from_url(url).set("kept", "yes")
    folder = tmp_path / "valkey"
    process.send_signal(signal.SIGKILL)  # the holder dies; its server is left running
    process.wait()
    assert len(_servers_on(folder)) == 1
    with EmbeddedServers(tmp_path, {"MONGO_URI": "unused", "REDIS_URL": ""}) as servers:
        assert servers.started == ["valkey"] and servers.redis_url != url
        running = _servers_on(folder)
        assert len(running) == 1  # the left-over server was stopped before this one started
        assert redis.Redis.from_url(servers.redis_url).get("kept") == b"yes"
    assert _servers_on(folder) == []
    assert not FolderLease(folder).record_path.exists()


def test_a_folder_let_go_is_taken_by_the_next_process(tmp_path):
    lease = FolderLease(tmp_path / "x")
    assert lease.try_hold()
    other = FolderLease(tmp_path / "x")
    assert not other.try_hold()
    lease.publish("redis://127.0.0.1:1/0", None)
    assert other.holders_url(timeout=5) == "redis://127.0.0.1:1/0"
    lease.release()
    assert not lease.record_path.exists()
    started = time.monotonic()
    assert other.holders_url(timeout=5) is None and time.monotonic() - started < 5
    assert other.try_hold()
    other.release()
