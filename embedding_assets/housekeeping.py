"""What a deployment keeps stays bounded over weeks: old runs and their event logs, and the shard
state's leftovers (spools and checkpoints of runs that died, tombstones past their retention,
old audit files).

Sensor and schedule ticks are bounded by the instance's ``retention`` setting (dagster.yaml);
the rest is this module's, run daily by the ``housekeeping`` schedule (defs/housekeeping.py)
or by ``embedding-assets housekeeping``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
from upath import UPath

from embedding_assets.lib.merge import TOMBSTONE_RETENTION
from embedding_assets.stores.shard_state import ShardStateStore

# A spool or checkpoint file this old belongs to no live run: runs take minutes to hours.
LEFTOVER_AGE = dt.timedelta(days=2)
AUDIT_FILE_AGE = dt.timedelta(days=1)
RUN_BATCH = 500  # run records deleted per query (each deletion takes its event log with it)


@dataclass
class Pruned:
    """What a housekeeping pass removed."""

    runs: int = 0
    failed_runs: int = 0
    spool_files: int = 0
    checkpoint_files: int = 0
    tombstones: int = 0
    audit_files: int = 0
    seconds: float = 0.0
    kept_runs: dict[str, int] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not isinstance(v, dict)}


def prune_runs(
    instance: Any, now: dt.datetime, keep: dt.timedelta, keep_failed: dt.timedelta, pruned: Pruned
) -> None:
    """Delete finished runs (and their event logs) last updated before ``now - keep``; failed
    ones only after ``keep_failed``, so that a failure stays to be read for longer."""
    from dagster import DagsterRunStatus, RunsFilter

    plans = [
        ([DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED], now - keep, "runs"),
        ([DagsterRunStatus.FAILURE], now - keep_failed, "failed_runs"),
    ]
    for statuses, before, counter in plans:
        while True:
            ids = instance.get_run_ids(RunsFilter(statuses=statuses, updated_before=before), limit=RUN_BATCH)
            for run_id in ids:
                instance.delete_run(run_id)
            setattr(pruned, counter, getattr(pruned, counter) + len(ids))
            if len(ids) < RUN_BATCH:
                break


def _old_files(folder: UPath, before: float) -> Iterator[UPath]:
    if not folder.exists():
        return
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_mtime < before:
            yield path


def prune_state(state: ShardStateStore, now: dt.datetime, pruned: Pruned) -> None:
    """Spools and checkpoints left by runs that died, shard tombstones past their retention (a
    shard rarely written keeps them otherwise), audit files nobody reads."""
    root = state.base
    leftover = now.timestamp() - LEFTOVER_AGE.total_seconds()
    for asset in root.glob("*"):
        if not asset.is_dir() or asset.name.startswith("_"):
            continue
        for kind, counter in (("_spool", "spool_files"), ("_checkpoints", "checkpoint_files")):
            for path in _old_files(asset / kind, leftover):
                path.unlink(missing_ok=True)
                setattr(pruned, counter, getattr(pruned, counter) + 1)
        for path in sorted((asset / "_deleted").glob("*.parquet")):
            with state.locks.hold(f"{asset.name}-{path.stem}"):  # the lock its writers hold
                pruned.tombstones += _prune_tombstones(path, now)
    audit_before = now.timestamp() - AUDIT_FILE_AGE.total_seconds()
    for path in _old_files(root / "_audit", audit_before):
        if path.name.startswith("repairs-") or path.name.startswith("."):
            path.unlink(missing_ok=True)
            pruned.audit_files += 1


def _prune_tombstones(path: UPath, now: dt.datetime) -> int:
    """Tombstones seen before the retention window (lib/merge.py forgets them on the next write
    of the shard; this does it for shards nobody writes)."""
    frame = pl.read_parquet(str(path))
    if "read_at" not in frame.columns:
        return 0
    kept = frame.filter(pl.col("read_at") >= now - TOMBSTONE_RETENTION)
    if kept.height == frame.height:
        return 0
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    kept.write_parquet(str(tmp))
    tmp.rename(path)
    return frame.height - kept.height
