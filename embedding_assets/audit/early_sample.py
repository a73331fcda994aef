"""A full run's sampled store audit, with its source sample read while the run publishes.

On SecantusDB the sample is a scan of the whole collection (``sample_documents``), which the
server takes seconds to build and send while the audit waits. The publish before the audit waits
on Redis most of its time. Started when the publish starts, the scan costs the audit only what is
left of it.

The sample is read apart from the run's snapshot: a snapshot that missed documents must not hide
them from the audit. It is the collection as it was when its scan started, so the audit uses it
only while that start is less than EA_AUDIT_GRACE_SECONDS before the audit's own time
(audit/store.py): a document changed since is younger than the grace, which a fresh scan would
leave unjudged too. Anything else (an older sample, another run's, another size, a failed scan) is
dropped, and the audit scans for itself.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from embedding_assets import settings
from embedding_assets.sources.mongo import MongoDocumentSource, Sample

log = logging.getLogger(__name__)
THREAD = "ea-audit-sample"


@dataclass(frozen=True)
class EarlySample:
    sample: Sample
    read_at: int  # store seconds, at or before the scan's start


@dataclass(frozen=True)
class _Pending:
    run_id: str
    size: int
    read_at: int
    sample: Future[Sample]


_lock = threading.Lock()
_pending: _Pending | None = None


def start(run_id: str, source: MongoDocumentSource, size: int, read_at: int) -> bool:
    """Read ``size`` documents for the audit of ``run_id`` in a thread, from ``read_at`` (store
    seconds, read before this call); False where no sample can be young enough (a grace of 0:
    every change is judged). One is kept per process: a run that never audits leaves nothing
    behind once the next one starts."""
    global _pending
    if int(settings.get("EA_AUDIT_GRACE_SECONDS")) <= 0:
        return False
    future: Future[Sample] = Future()

    def read() -> None:
        try:
            future.set_result(source.sample_documents(size))
        except BaseException as err:  # the audit scans for itself, and reports its own error
            future.set_exception(err)

    with _lock:
        _pending = _Pending(run_id, size, read_at, future)
    threading.Thread(target=read, name=THREAD, daemon=True).start()
    return True


def take(run_id: str, size: int) -> EarlySample | None:
    """The sample read for this run's audit (waiting for its scan to end), or None where there is
    none, or it is another run's or of another size, or its scan failed."""
    global _pending
    with _lock:
        pending, _pending = _pending, None
    if pending is None or pending.run_id != run_id or pending.size != size:
        return None
    try:
        return EarlySample(pending.sample.result(), pending.read_at)
    except Exception as err:
        log.warning("the audit's early sample failed (%s); it scans for itself", err)
        return None
