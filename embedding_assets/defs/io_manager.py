"""Parquet through polars, one file per shard partition.

dagster-polars does not work with polars 2.x, hence this small UPathIOManager. Assets hand
it ``{partition_key: DataFrame}`` (so one run can write many shards, as ranged backfills do)
and get the same shape back as inputs.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl
from upath import UPath

from embedding_assets.lib.shard_state import ShardStateStore


class ShardFrameIOManager(dg.UPathIOManager):
    """Paths are ``<base>/<asset>/<partition>.parquet``, the layout ShardStateStore reads."""

    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: pl.DataFrame, path: UPath) -> None:
        # atomic: readers (and the next run's merge) never see a half-written shard
        ShardStateStore(path.parent.parent).save(path.parent.name, path.stem, obj)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pl.DataFrame:
        return pl.read_parquet(str(path))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise dg.DagsterInvariantViolationError(
                "assets stored by ShardFrameIOManager return {partition_key: DataFrame}"
            )
        paths = self._get_paths_for_partitions(context)
        missing = set(paths) - set(obj)
        if missing:
            raise dg.DagsterInvariantViolationError(f"no frame for partitions {sorted(missing)}")
        rows = size = 0
        for key, path in paths.items():
            self.make_directory(path.parent)
            self.dump_to_path(context, obj[key], path)
            # the shard is stored whole: batches checkpointed on the way are no longer needed
            ShardStateStore(path.parent.parent).clear_checkpoints(path.parent.name, key)
            rows += obj[key].height
            size += path.stat().st_size
        context.add_output_metadata(
            {
                "stored_rows": rows,
                "bytes_written": size,
                "path": dg.MetadataValue.path(str(next(iter(paths.values())).parent)),
            }
        )

    def load_input(self, context: dg.InputContext) -> dict[str, pl.DataFrame]:
        loaded = super().load_input(context)
        keys = context.asset_partition_keys
        if len(keys) == 1 and not isinstance(loaded, dict):
            return {keys[0]: loaded}
        return loaded or {}


class PolarsParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Base directory of the intermediate assets (local path or any fsspec URL)."""

    base_dir: str

    def create_io_manager(self, context: dg.InitResourceContext) -> ShardFrameIOManager:
        return ShardFrameIOManager(base_path=UPath(self.base_dir))
