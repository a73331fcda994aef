"""A full run's sampled store audit, with its source sample read beside the run.

On SecantusDB the sample is a scan of the whole collection (``sample_documents``): the server builds
its whole result before the first page (1.5 s of its time at 100k documents), then the client
decodes every document and hashes its doc_id (1.8 s of interpreter time). Read after the publish,
all of it was the audit's wait. So a full run's embedding step opens the scan ``held`` when what it
has left to embed takes about what opening a scan took this run's snapshot (``opens_now``): the
server builds the result while the embedding ends. The publish ``release``s it (or the audit takes
it), and it reads on beside the publish, in a child process (audit/sample_process.py): a thread of
the run's process would take its interpreter time from the publish's. A source that samples
without a scan (MongoDB's ``$sample``) is read by a thread, opened by the publish as before.

The sample is read apart from the run's snapshot: a snapshot that missed documents must not hide
them from the audit. It is the collection as it was when its scan started, so the audit uses it
only while that start is less than EA_AUDIT_GRACE_SECONDS before the audit's own time
(audit/store.py): a document changed since is younger than the grace, which a fresh scan would
leave unjudged too. Opened seconds before the publish, it is seconds older, not minutes. Anything
else (an older sample, another run's, another size, a failed scan, one held longer than the grace)
is dropped, and the audit scans for itself.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from embedding_assets import settings
from embedding_assets.audit.sample_process import SampleDropped, SampleProcess
from embedding_assets.sources.mongo import MongoDocumentSource, Sample

log = logging.getLogger(__name__)
THREAD = "ea-audit-sample"
# what starting the sample's child process takes, on top of the server's opening of the scan
PROCESS_START_SECONDS = 0.5


@dataclass(frozen=True)
class EarlySample:
    sample: Sample
    read_at: int  # store seconds, at or before the scan's start


class _ThreadReader:
    """A sample read by a thread of this process (a source that samples without a scan)."""

    def __init__(self, source: MongoDocumentSource, size: int, *, held: bool, hold_seconds: float) -> None:
        self.sample: Future[Sample] = Future()
        self._go, self._dropped = threading.Event(), threading.Event()
        if not held:
            self._go.set()

        def opened() -> None:
            if not self._go.wait(timeout=hold_seconds) or self._dropped.is_set():
                raise SampleDropped("the audit's sample was not released")

        def read() -> None:
            try:
                self.sample.set_result(source.sample_documents(size, opened=opened))
            except BaseException as err:  # the audit scans for itself, and reports its own error
                self.sample.set_exception(err)

        threading.Thread(target=read, name=THREAD, daemon=True).start()

    def release(self) -> None:
        self._go.set()

    def drop(self) -> None:
        self._dropped.set()
        self._go.set()

    def stop(self) -> None:
        """A thread cannot be stopped: it ends with its read, and nobody takes what it reads."""
        self.drop()


@dataclass(frozen=True)
class _Pending:
    run_id: str
    size: int
    read_at: int
    reader: _ThreadReader | SampleProcess


_lock = threading.Lock()
_pending: _Pending | None = None


def opens_now(seconds_left: float, opening_seconds: float | None) -> bool:
    """Whether a held scan should open now, with ``seconds_left`` of embedding to go: when the
    server takes about that long to open a scan (``opening_seconds``, as the run's snapshot
    measured it, and a child process's start; None: unknown, the publish opens it as before)."""
    return opening_seconds is not None and seconds_left <= opening_seconds + PROCESS_START_SECONDS


def start(run_id: str, source: MongoDocumentSource, size: int, read_at: int, *, held: bool = False) -> bool:
    """Read ``size`` documents for the audit of ``run_id``, from ``read_at`` (store seconds, read
    before this call): in a child process where the source samples by scanning it whole, else in
    a thread. False where no sample can be young enough (a grace of 0: every change is judged).
    ``held``: the scan opens now and reads on at ``release``. One is kept per process: a run that
    never audits leaves nothing behind once the next one starts."""
    global _pending
    grace = int(settings.get("EA_AUDIT_GRACE_SECONDS"))
    if grace <= 0:
        return False
    try:  # held longer than the grace, a sample could not be used: it ends unread (hold_seconds)
        kind = SampleProcess if source is not None and source.samples_by_scanning() else _ThreadReader
        reader = kind(source, size, held=held, hold_seconds=grace)
    except Exception as err:  # the source or a process cannot start it: the audit scans for itself
        log.warning("the audit's early sample did not start (%s); the audit scans for itself", err)
        return False
    with _lock:
        previous, _pending = _pending, _Pending(run_id, size, read_at, reader)
    if previous is not None:
        previous.reader.drop()
    return True


def release(run_id: str, size: int) -> bool:
    """Let this run's held sample read on (the publish has begun); False where it has none of
    ``size`` documents pending, and the caller starts one."""
    with _lock:
        pending = _pending
    if pending is None or pending.run_id != run_id or pending.size != size:
        return False
    pending.reader.release()
    return True


def take(run_id: str, size: int) -> EarlySample | None:
    """The sample read for this run's audit (waiting for its scan to end), or None where there is
    none, or it is another run's or of another size, or its scan failed, or it has not ended
    within the grace: by then it is too old to use, and a server that hangs without closing its
    sockets must not hold the audit on it."""
    global _pending
    with _lock:
        pending, _pending = _pending, None
    if pending is None:
        return None
    if pending.run_id != run_id or pending.size != size:
        pending.reader.drop()
        return None
    pending.reader.release()  # held and never released (no publish in between): read now
    grace = float(settings.get("EA_AUDIT_GRACE_SECONDS"))
    try:
        sample = pending.reader.sample.result(timeout=grace)
    except Exception as err:
        if pending.reader.sample.done():  # its scan failed (a timeout of its own included)
            log.warning("the audit's early sample failed (%s); it scans for itself", err)
        else:  # still reading after the grace: too old to use, and ended
            pending.reader.stop()
            log.warning("the audit's early sample did not end within %.0f s; it scans for itself", grace)
        return None
    return EarlySample(sample, pending.read_at)
