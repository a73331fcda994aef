"""What a step records: each shard's own figures on its partition, the run's as ``run_<name>``."""

import datetime as dt
import time

import dagster as dg
import polars as pl

from embedding_assets.stores.shard_state import ShardStateStore


class Written:
    """Shards an asset stored in this step, and the metadata that says so: the run's totals, and
    each shard's own figures on its partition's materialization."""

    def __init__(self, context: dg.AssetExecutionContext, state: ShardStateStore, asset: str) -> None:
        self.context, self.state, self.asset = context, state, asset
        self.rows = self.bytes = 0
        self.shards: dict[str, dict[str, object]] = {}

    def save_snapshot(self, key: str, frame: pl.DataFrame, deleted: pl.DataFrame | None = None, **kw) -> None:
        size = self.state.save_snapshot(key, frame, deleted, now=dt.datetime.now(dt.UTC), **kw)
        self._count(key, frame.height, size)

    def save_derived(self, key: str, frame: pl.DataFrame) -> None:
        self._count(key, frame.height, self.state.save_derived(self.asset, key, frame))

    def _count(self, key: str, rows: int, size: int) -> None:
        self.rows += rows
        self.bytes += size
        self.shard(key, rows=rows, bytes_written=size)

    def shard(self, key: str, **figures: object) -> None:
        """Figures of one shard (added to what it has)."""
        mine = self.shards.setdefault(key, {})
        for name, value in figures.items():
            mine[name] = mine[name] + value if isinstance(value, int) and name in mine else value

    def result(self, **metadata: object) -> dg.MaterializeResult:
        totals = {
            "rows": self.rows,
            "bytes_written": self.bytes,
            "path": dg.MetadataValue.path(str(self.state.base / self.asset)),
            **metadata,
        }
        return dg.MaterializeResult(metadata=shard_figures(self.context, self.shards, totals))


def shard_figures(
    context: dg.AssetExecutionContext, shards: dict[str, dict[str, object]], totals: dict[str, object]
) -> dict[str, object]:
    """Each partition of the run gets its own shard's figures under the usual names (``rows``,
    ``written``, ...). What is returned, which Dagster records on every partition of the run, holds
    only what is the run's: its figures as ``run_<name>`` (totals, rates, tables) and what is the
    same for every shard (``version``, ``mode``, ``model``)."""
    run: dict[str, object] = {}
    for name, value in totals.items():
        figure = isinstance(value, int | float | dg.MetadataValue) and not isinstance(value, bool)
        shared = isinstance(value, dg.PathMetadataValue)
        run[f"run_{name}" if figure and not shared else name] = value
    names = {name for figures in shards.values() for name in figures} | {"rows"}
    for key in context.partition_keys:
        context.add_asset_metadata({**{n: 0 for n in names}, **shards.get(key, {})}, partition_key=key)
    return run


def rate(count: int, started: float) -> float:
    return round(count / max(time.perf_counter() - started, 1e-9), 1)


def reason_table(skipped: pl.DataFrame, limit: int = 20) -> str:
    if skipped.height == 0:
        return "none"
    lines = ["| doc_id | reason |", "| --- | --- |"]
    for row in skipped.head(limit).iter_rows(named=True):
        lines.append(f"| {row['doc_id']} | {row['skip_reason']} |")
    if skipped.height > limit:
        lines.append(f"| ... | {skipped.height - limit} more |")
    return "\n".join(lines)
