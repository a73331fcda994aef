"""Shards of doc_id as static partitions. The count is fixed per deployment (EA_NUM_SHARDS)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from embedding_assets import settings
from embedding_assets.lib.sharding import shard_index, shard_keys

NUM_SHARDS = settings.num_shards()

shard_partitions = dg.StaticPartitionsDefinition(shard_keys(NUM_SHARDS))

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def run_shards(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> list[int]:
    """Shards of this run; ``partition_keys`` works for single partitions and ranged backfills."""
    return [shard_index(k) for k in context.partition_keys]


def range_tags(keys: Sequence[str] | None = None) -> dict[str, str]:
    """Tags of one run over a contiguous range of shards (default: all), as a backfill makes."""
    keys = list(keys or shard_partitions.get_partition_keys())
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}
