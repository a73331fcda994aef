"""Parquet through polars, one file per shard partition.

dagster-polars does not work with polars 2.x, hence this small UPathIOManager. A run may
cover every shard (ranged backfills are one run), so no step holds all of them: inputs are
a mapping that reads a shard when it is asked for, and assets write each shard as soon as it
is done (``StoredShards``), handing the manager only what they wrote. Small outputs may
still be returned as ``{partition_key: DataFrame}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl
from upath import UPath

from embedding_assets.lib.shard_state import ShardStateStore


class ShardFrames(Mapping[str, pl.DataFrame]):
    """An upstream asset's shards, each read from Parquet when it is asked for."""

    def __init__(self, paths: dict[str, UPath]) -> None:
        self._paths = paths

    def __getitem__(self, key: str) -> pl.DataFrame:
        return pl.read_parquet(str(self._paths[key]))

    def load(self, key: str, columns: list[str]) -> pl.DataFrame:
        """Only the columns a step needs (vectors without their chunks, say)."""
        return pl.read_parquet(str(self._paths[key]), columns=columns)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


@dataclass
class StoredShards:
    """What an asset already wrote through ShardStateStore: partition key -> rows."""

    rows: dict[str, int] = field(default_factory=dict)


class ShardFrameIOManager(dg.UPathIOManager):
    """Paths are ``<base>/<asset>/<partition>.parquet``, the layout ShardStateStore reads."""

    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pl.DataFrame, path: UPath) -> None:
        # atomic: readers (and the next run's merge) never see a half-written shard
        ShardStateStore(path.parent.parent).save(path.parent.name, path.stem, obj)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pl.DataFrame:
        return pl.read_parquet(str(path))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, dict | StoredShards):
            raise dg.DagsterInvariantViolationError(
                "assets stored by ShardFrameIOManager return StoredShards or {partition_key: DataFrame}"
            )
        paths = self._get_paths_for_partitions(context)
        given = obj.rows if isinstance(obj, StoredShards) else obj
        missing = set(paths) - set(given)
        if missing:
            raise dg.DagsterInvariantViolationError(f"no frame for partitions {sorted(missing)}")
        rows = size = 0
        for key, path in paths.items():
            if isinstance(obj, StoredShards):
                rows += obj.rows[key]
            else:
                self.make_directory(path.parent)
                self.dump_to_path(context, obj[key], path)
                rows += obj[key].height
            # the shard is stored whole: batches checkpointed on the way are no longer needed
            ShardStateStore(path.parent.parent).clear_checkpoints(path.parent.name, key)
            size += path.stat().st_size
        context.add_output_metadata(
            {
                "stored_rows": rows,
                "bytes_written": size,
                "path": dg.MetadataValue.path(str(next(iter(paths.values())).parent)),
            }
        )

    def load_input(self, context: dg.InputContext) -> ShardFrames:
        paths = self._get_paths_for_partitions(context)
        absent = sorted(k for k, p in paths.items() if not p.exists())
        if absent:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()} has no stored shards {absent}; materialize it first"
            )
        return ShardFrames(paths)


class PolarsParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Base directory of the intermediate assets (local path or any fsspec URL)."""

    base_dir: str

    def create_io_manager(self, context: dg.InitResourceContext) -> ShardFrameIOManager:
        return ShardFrameIOManager(base_path=UPath(self.base_dir))
