"""Shards of doc_id as static partitions. The count is fixed per deployment (EA_NUM_SHARDS)."""

from __future__ import annotations

import os

import dagster as dg

from embedding_assets.lib.sharding import shard_index, shard_keys

NUM_SHARDS = int(os.environ.get("EA_NUM_SHARDS", "16"))

shard_partitions = dg.StaticPartitionsDefinition(shard_keys(NUM_SHARDS))


def run_shards(context: dg.AssetExecutionContext) -> list[int]:
    """Shards of this run; ``partition_keys`` works for single partitions and ranged backfills."""
    return [shard_index(k) for k in context.partition_keys]
