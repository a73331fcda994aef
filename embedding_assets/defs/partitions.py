"""Shards of doc_id as static partitions. The count is fixed per deployment (EA_NUM_SHARDS)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from embedding_assets import settings
from embedding_assets.lib.sharding import shard_index, shard_key, shard_keys

NUM_SHARDS = settings.num_shards()
SHARDS_PER_RUN = settings.shards_per_run()

shard_partitions = dg.StaticPartitionsDefinition(shard_keys(NUM_SHARDS))

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
# A delta run spans the range from its lowest to its highest changed shard (one run per sensor
# tick, not one per shard); this tag names the shards in it that have changes, the only ones
# its steps read and write.
SHARDS_TAG = "embedding_assets/shards"


def backfill_policy() -> dg.BackfillPolicy:
    """Whole-collection backfills: one run (one MongoDB scan), or runs of EA_SHARDS_PER_RUN shards
    that workers execute at once, each reading only its own shards' documents."""
    if SHARDS_PER_RUN <= 0 or SHARDS_PER_RUN >= NUM_SHARDS:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=SHARDS_PER_RUN)


def work_keys(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> list[str]:
    """The shard keys this step works on: the run's partitions (``partition_keys`` works for
    single partitions and ranged runs), narrowed to the changed ones in a delta run."""
    keys = list(context.partition_keys)
    named = context.run.tags.get(SHARDS_TAG)
    if named is None:
        return keys
    wanted = set(named.split(","))
    return [k for k in keys if k in wanted]


def run_shards(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> list[int]:
    """Shards this step works on, as indexes."""
    return [shard_index(k) for k in work_keys(context)]


def range_tags(keys: Sequence[str] | None = None) -> dict[str, str]:
    """Tags of one run over a contiguous range of shards (default: all), as a backfill makes."""
    keys = list(keys or shard_partitions.get_partition_keys())
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


def delta_tags(shards: Sequence[int]) -> dict[str, str]:
    """Tags of one delta run over the given shards: the range that spans them, and which they are."""
    keys = [shard_key(s, NUM_SHARDS) for s in sorted(set(shards))]
    if len(keys) == 1:
        return {SHARDS_TAG: keys[0]}
    return {**range_tags(keys), SHARDS_TAG: ",".join(keys)}
