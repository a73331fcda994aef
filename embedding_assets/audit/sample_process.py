"""The audit's sample scan in a process of its own, where the source samples by scanning.

On SecantusDB a sample is a scan of the whole collection (``MongoDocumentSource.sample_documents``):
every document decoded and its doc_id hashed in Python, about 1.8 s of interpreter time per 100k
documents. A full run reads it while it publishes. Read by a thread of the run's process, that time
came out of the publish's, whose threads share one interpreter lock with it: the process stayed at
one core for 6 s, where the publish alone took 2.3 s (docs/benchmarks.md). A child process reads
it beside the publish instead, and hands back only the sample.

Protocol on the child's pipes: one JSON line in (the source, the size, how long it may be held);
the child opens the scan, says ``opened`` on a line of its own, and if held waits for a line
``go`` before reading on (end of input, or none within the hold: it closes the scan and ends); then
one pickled ``("sample", Sample)`` or ``("error", text)`` out. Its stderr is the parent's.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import Future

from embedding_assets.sources.mongo import MongoDocumentSource, Sample

OPENED = b"opened\n"


class SampleDropped(RuntimeError):
    """A held sample nobody released: its run moved on, or another run's sample replaced it."""


class SampleProcess:
    """A sample read by a child process; ``sample`` is set when it ends."""

    def __init__(self, source: MongoDocumentSource, size: int, *, held: bool, hold_seconds: float) -> None:
        request = {
            "source": {
                "uri": source.uri,
                "database": source.database,
                "collection": source.collection_name,
                "batch_size": source.batch_size,
                "timeout_ms": source.timeout_ms,
            },
            "size": size,
            "held": held,
            "hold_seconds": hold_seconds,
        }
        self.sample: Future[Sample] = Future()
        self.opened = threading.Event()  # the server has built the scan; its first page is read
        self._lock = threading.Lock()
        # the modules this process imports, wherever they came from (a code location's working
        # directory, not only an installed package)
        path = os.pathsep.join(p for p in sys.path if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        self._send(json.dumps(request).encode() + b"\n")
        threading.Thread(target=self._wait, name="ea-audit-sample", daemon=True).start()

    def _send(self, line: bytes, close: bool = False) -> None:
        stdin = self._process.stdin
        with self._lock:
            if stdin is None or stdin.closed:
                return
            try:
                stdin.write(line)
                stdin.flush()
                if close:
                    stdin.close()
            except (BrokenPipeError, ValueError, OSError):  # it has ended already
                pass

    def release(self) -> None:
        self._send(b"go\n")

    def drop(self) -> None:
        """Nobody will take it: a held child ends at once, a reading one when its scan ends."""
        self._send(b"", close=True)

    def stop(self) -> None:
        """It has taken too long (a server that hangs): it ends now, and its sample fails."""
        self._process.kill()  # a no-op where it has ended already

    def _wait(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        data = stdout.readline()
        if data == OPENED:
            self.opened.set()
            data = b""
        data += stdout.read()
        code = self._process.wait()
        self._send(b"", close=True)
        try:
            kind, value = pickle.loads(data)
        except Exception:  # nothing, or half a reply: it died
            self.sample.set_exception(RuntimeError(f"the audit's sample process ended with status {code}"))
            return
        if kind == "sample":
            self.sample.set_result(value)
        else:
            self.sample.set_exception(RuntimeError(f"the audit's sample process failed: {value}"))


class _Input:
    """The child's stdin, unbuffered: a line waited for with a timeout must not sit in a buffer."""

    def __init__(self) -> None:
        self.pending = b""

    def line(self, timeout: float | None = None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not select.select([0], [], [], left)[0]:
                return None  # timed out
            chunk = os.read(0, 65536)
            if not chunk:
                return None  # end of input
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line


def main() -> None:
    stdin = _Input()
    request = json.loads(stdin.line() or b"{}")
    source = MongoDocumentSource(**request["source"])

    def opened() -> None:
        sys.stdout.buffer.write(OPENED)
        sys.stdout.buffer.flush()
        if request["held"] and stdin.line(request["hold_seconds"]) != b"go":
            raise SampleDropped("the audit's sample was not released")

    try:
        sample = source.sample_documents(request["size"], opened=opened)
        outcome: tuple[str, object] = ("sample", sample)
    except BaseException as err:  # the parent's audit scans for itself, and says why
        outcome = ("error", f"{type(err).__name__}: {err}")
    finally:
        source.close()
    pickle.dump(outcome, sys.stdout.buffer, protocol=pickle.HIGHEST_PROTOCOL)  # no copy of it in memory
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
