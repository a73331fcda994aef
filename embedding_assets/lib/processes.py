"""A process's identity that no clock step changes (its pid and its start in ticks since boot),
and the cores it may run on."""

from __future__ import annotations

import os


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
