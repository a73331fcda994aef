"""A process's identity that no clock step changes (its pid and its start in ticks since boot),
the cores it may run on, and an exit that a native runtime's teardown cannot abort."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start_ticks(pid: int | None) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux ``/proc/<pid>/stat``, field 22);
    None where the process does not exist or the system has no ``/proc``.

    Wall-clock start times (psutil's ``create_time``) are boot time plus these ticks, and boot
    time is read from the wall clock: after a step of the clock (an NTP step, a VM pause) they
    no longer match times recorded before it. The ticks do."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22; fields[0] is field 3 (the state)
    except (OSError, IndexError, ValueError):
        return None


def exit_without_teardown(code: int) -> NoReturn:
    """Leave with ``code`` once output and logs are flushed, skipping the interpreter's teardown.

    A process that compiled OpenVINO models (2026.4) aborts in that teardown after its work is
    done, "terminate called without an active exception" and exit status 134: its stream threads
    wait for the interpreter's lock while the main thread destroys them (1 exit in 4 with one
    model, 6 in 6 with two). Freeing the models before exit instead hung in 1 of 4. For processes
    this project owns (the runtimes' timing child, the command line), never for a library's host.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or gone: nothing more to say on it
            stream.flush()
    os._exit(code)
